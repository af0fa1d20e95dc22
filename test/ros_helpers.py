"""What the rclpy tests share: a ROS 2 domain of their own on this host only.

DDS discovers every participant on the network with the same ROS_DOMAIN_ID, so two test
processes (pytest-xdist workers, another engineer's run, a robot on the LAN) would see each
other's /swiftseg_test nodes and topics. Each test module that uses rclpy picks a random
domain before `rclpy.init()` (the rmw reads both variables then) and limits discovery to
this host; node processes it starts inherit both.
"""

from __future__ import annotations

import os
import random

# Fast DDS maps a domain to UDP ports 7400 + 250 * id and up; 1..100 stays below the
# ephemeral range on Linux (ROS 2's own guidance for domain ids is 0-101).
DOMAINS = range(1, 101)


def isolate_ros_domain() -> int:
    """Set a random ROS_DOMAIN_ID and localhost-only discovery (ROS_AUTOMATIC_DISCOVERY_RANGE
    from Iron on; ROS_LOCALHOST_ONLY under Humble) for this process and its children;
    returns the domain id."""
    domain = random.SystemRandom().choice(DOMAINS)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if os.environ.get("ROS_DISTRO") == "humble":  # Jazzy warns that it is deprecated
        os.environ["ROS_LOCALHOST_ONLY"] = "1"
    return domain
