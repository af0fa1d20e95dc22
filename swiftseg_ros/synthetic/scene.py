"""Procedural road scenes: a 3-D street world drawn through a pinhole camera with exact labels.

The world is a road along the z axis (metres; it may bend), sidewalks, verges, buildings
with windows, trees, bushes, poles, cars in lanes and parking strips, and people. Every
visible surface is a polygon (or disc) drawn far to near with `cv2.fillPoly` /
`cv2.circle` into the RGB image and, with the same vertices, into the label image, so the
labels are exact. Lighting, a colour cast, sensor noise and blur are applied afterwards
to the image only.

Randomness comes only from numpy Generators keyed by tuples of integers: the world
parameters, each 25 m segment of static scenery, each lane's traffic and each sidewalk's
pedestrians have their own key, so any frame can be rendered on its own. A world is
either one still frame (a random camera at the start of a random world) or a sequence:
the world is fixed, the camera drives forward along the road, cars keep their lanes at
steady speeds and people walk slowly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

CLASS_NAMES = ("sky", "building", "vegetation", "road", "sidewalk", "lane marking", "car",
               "person", "pole")
SKY, BUILDING, VEGETATION, ROAD, SIDEWALK, MARKING, CAR, PERSON, POLE = range(len(CLASS_NAMES))
PALETTE = ((70, 130, 180), (70, 70, 70), (107, 142, 35), (128, 64, 128), (244, 35, 232),
           (255, 255, 255), (0, 0, 142), (220, 20, 60), (153, 153, 153))

SEGMENT = 25.0        # metres of street generated from one key
NEAR = 1.5            # near clipping distance (m): keeps projected vertices bounded
GROUND_FAR = 1500.0   # the road and sidewalks are drawn up to here
STATIC_FAR = 220.0    # buildings, trees and poles further than this are not drawn
MOVER_FAR = 160.0     # cars and people further than this are not drawn
START_Z = 3 * SEGMENT  # the camera starts here so that every segment index is positive
EGO_GAP = (9.0, 15.0)  # the nearest a car in the camera's own lane starts (m): still, drive
SHIFT = 4             # fixed-point bits for sub-pixel vertices in cv2 drawing calls
SCALE = float(1 << SHIFT)

BUILDING_COLOURS = ((120, 120, 120), (170, 170, 165), (200, 190, 170), (150, 80, 60),
                    (180, 150, 120), (90, 100, 120), (220, 220, 215), (110, 90, 80),
                    (140, 150, 160), (80, 80, 85), (190, 170, 140), (160, 110, 90))
CAR_COLOURS = ((225, 225, 225), (30, 30, 32), (170, 172, 175), (110, 110, 115), (170, 30, 30),
               (40, 60, 140), (40, 70, 50), (210, 180, 40), (190, 180, 160), (90, 30, 40),
               (60, 110, 160), (130, 130, 120))
SKIN = ((230, 190, 160), (200, 150, 110), (150, 100, 70), (100, 70, 50))
SIDEWALK_COLOURS = ((150, 150, 150), (175, 165, 150), (160, 120, 110), (120, 120, 125),
                    (190, 185, 175))


def _jitter(rng: np.random.Generator, base, amount: float) -> tuple[int, int, int]:
    """A colour near `base`: one shared brightness shift plus a small per-channel tint."""
    shift = rng.uniform(-amount, amount)
    tint = rng.uniform(-amount / 3, amount / 3, 3).tolist()
    return tuple(int(min(255.0, max(0.0, b + shift + t))) for b, t in zip(base, tint, strict=True))


def _scaled(colour, factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, c * factor)) for c in colour)


def _choice(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


@dataclass(frozen=True)
class Camera:
    z: float          # world z of the camera
    x: float          # world lateral position
    height: float     # above the ground (m)
    slope: float      # heading: lateral metres per metre forward (follows the road)
    focal: float      # pixels
    cx: float         # principal point column
    horizon: float    # row of the horizon (pitch)
    yaw_px: float     # extra horizontal shift of the view (small yaw), pixels


@dataclass
class Canvas:
    """The image and label being drawn, and every colour drawn per class (for tests)."""

    rgb: np.ndarray
    label: np.ndarray
    colours: list[set] = field(default_factory=lambda: [set() for _ in CLASS_NAMES])

    def polys(self, polys: list[np.ndarray], colour, cls: int) -> None:
        """Fill polygons given as float (N, 2) pixel coordinates."""
        pts = [np.round(p * SCALE).astype(np.int32) for p in polys]
        cv2.fillPoly(self.rgb, pts, colour, cv2.LINE_8, SHIFT)
        cv2.fillPoly(self.label, pts, cls, cv2.LINE_8, SHIFT)
        self.colours[cls].add(colour)

    def disc(self, u: float, v: float, radius: float, colour, cls: int) -> None:
        centre = (int(round(u * SCALE)), int(round(v * SCALE)))
        r = max(1, int(round(radius * SCALE)))
        cv2.circle(self.rgb, centre, r, colour, -1, cv2.LINE_8, SHIFT)
        cv2.circle(self.label, centre, r, cls, -1, cv2.LINE_8, SHIFT)
        self.colours[cls].add(colour)


class View:
    """Projection of world points (lateral offset from the road centre, height, z)."""

    def __init__(self, world: World, camera: Camera, canvas: Canvas):
        self.world, self.cam, self.canvas = world, camera, canvas

    def project(self, xr, y, z) -> tuple[np.ndarray, np.ndarray]:
        cam = self.cam
        z = np.asarray(z, dtype=np.float64)
        depth = z - cam.z
        lateral = self.world.road_centre(z) + xr - cam.x - cam.slope * depth
        u = cam.cx + cam.yaw_px + cam.focal * lateral / depth
        v = cam.horizon + cam.focal * (cam.height - np.asarray(y, dtype=np.float64)) / depth
        return u, v

    def points(self, xr, y, z) -> np.ndarray:
        u, v = self.project(xr, y, z)
        return np.stack(np.broadcast_arrays(u, v), axis=-1)

    def depth(self, z: float) -> float:
        return z - self.cam.z

    def pixels_per_metre(self, z: float) -> float:
        return self.cam.focal / max(z - self.cam.z, NEAR)

    # surfaces -----------------------------------------------------------------------------

    def ground_strip(self, x0: float, x1: float, colour, cls: int) -> None:
        """A strip of ground between lateral offsets x0 and x1, from near to far."""
        zs = self.world.z_samples(self.cam.z + NEAR, self.cam.z + GROUND_FAR)
        left = self.points(x0, 0.0, zs)
        right = self.points(x1, 0.0, zs[::-1])
        self.canvas.polys([np.concatenate([left, right])], colour, cls)

    def ground_quads(self, quads: np.ndarray, colour, cls: int) -> None:
        """Small ground quads (n, 4, 2) of (lateral, z) corners, in one call."""
        if len(quads) == 0:
            return
        keep = quads[:, :, 1].min(axis=1) > self.cam.z + NEAR
        quads = quads[keep]
        if len(quads) == 0:
            return
        u, v = self.project(quads[:, :, 0], 0.0, quads[:, :, 1])
        self.canvas.polys(list(np.stack([u, v], axis=-1)), colour, cls)

    def wall_x(self, xr: float, z0: float, z1: float, y0: float, y1: float, colour,
               cls: int) -> bool:
        """A vertical wall in the plane lateral = xr, along z. False if behind the camera."""
        z0 = max(z0, self.cam.z + NEAR)
        if z1 <= z0:
            return False
        zs = self.world.z_samples(z0, z1)
        bottom = self.points(xr, y0, zs)
        top = self.points(xr, y1, zs[::-1])
        self.canvas.polys([np.concatenate([bottom, top])], colour, cls)
        return True

    def wall_z(self, z: float, x0: float, x1: float, y0: float, y1: float, colour, cls: int):
        """A vertical wall facing the camera at distance z, from lateral x0 to x1."""
        if z <= self.cam.z + NEAR:
            return
        xs = np.array([x0, x1, x1, x0])
        ys = np.array([y0, y0, y1, y1])
        self.canvas.polys([self.points(xs, ys, z)], colour, cls)

    def roof(self, y: float, x0: float, x1: float, z0: float, z1: float, colour, cls: int):
        """A horizontal face at height y (visible only from above)."""
        z0 = max(z0, self.cam.z + NEAR)
        if z1 <= z0 or self.cam.height <= y:
            return
        xs = np.array([x0, x1, x1, x0])
        zs = np.array([z0, z0, z1, z1])
        self.canvas.polys([self.points(xs, y, zs)], colour, cls)


# scene elements ---------------------------------------------------------------------------

@dataclass
class Building:
    side: int
    z0: float
    z1: float
    height: float
    depth: float
    colour: tuple
    window_colour: tuple
    floor_height: float
    window_pitch: float
    window_fill: tuple  # fraction of a bay taken by the window (horizontal, vertical)
    ground_colour: tuple

    def draw(self, view: View, world: World) -> None:
        xf = world.facade_x(self.side)
        xb = xf + self.side * self.depth
        dark = _scaled(self.colour, 0.78)
        if not view.wall_x(xf, self.z0, self.z1, 0.0, self.height, self.colour, BUILDING):
            return
        view.wall_z(self.z0, xf, xb, 0.0, self.height, dark, BUILDING)
        z0 = max(self.z0, view.cam.z + NEAR)
        ppm = view.pixels_per_metre(z0)
        view.wall_x(xf, z0, self.z1, 0.0, min(self.height, 3.2), self.ground_colour, BUILDING)
        if ppm * self.window_pitch * self.window_fill[0] < 1.5:
            return
        # window grid on the facade: one vectorized projection and one fillPoly call
        floors = np.arange(1, int(self.height / self.floor_height))
        bays = np.arange(z0 + 0.6 * self.window_pitch, self.z1 - 0.5 * self.window_pitch,
                         self.window_pitch)
        if len(floors) and len(bays):
            half_w = 0.5 * self.window_pitch * self.window_fill[0]
            half_h = 0.5 * self.floor_height * self.window_fill[1]
            zc, yc = np.meshgrid(bays, (floors + 0.5) * self.floor_height)
            zc, yc = zc.ravel(), yc.ravel()
            zq = np.stack([zc - half_w, zc + half_w, zc + half_w, zc - half_w], axis=1)
            yq = np.stack([yc - half_h, yc - half_h, yc + half_h, yc + half_h], axis=1)
            u, v = view.project(xf, yq, zq)
            view.canvas.polys(list(np.stack([u, v], axis=-1)), self.window_colour, BUILDING)
        # shop windows on the ground floor
        shop = bays[::2] if len(bays) else bays
        if len(shop):
            half = 0.4 * self.window_pitch
            zq = np.stack([shop - half, shop + half, shop + half, shop - half], axis=1)
            yq = np.broadcast_to(np.array([0.3, 0.3, 2.5, 2.5]), zq.shape)
            u, v = view.project(xf, yq, zq)
            view.canvas.polys(list(np.stack([u, v], axis=-1)),
                              _scaled(self.window_colour, 0.8), BUILDING)


@dataclass
class Tree:
    xr: float
    z: float
    trunk_height: float
    trunk_width: float
    crown: list  # (dx, dy, radius, colour) in metres around the crown centre
    trunk_colour: tuple

    def draw(self, view: View, world: World) -> None:
        if view.depth(self.z) <= NEAR:
            return
        half = self.trunk_width / 2
        view.wall_z(self.z, self.xr - half, self.xr + half, 0.0, self.trunk_height + 0.5,
                    self.trunk_colour, VEGETATION)
        ppm = view.pixels_per_metre(self.z)
        crown = self.crown if ppm > 4 else self.crown[:1]
        for dx, dy, radius, colour in crown:
            u, v = view.project(self.xr + dx, self.trunk_height + dy, self.z)
            view.canvas.disc(float(u), float(v), radius * ppm, colour, VEGETATION)


@dataclass
class Bush:
    xr: float
    z: float
    blobs: list  # (dx, dy, radius, colour)

    def draw(self, view: View, world: World) -> None:
        if view.depth(self.z) <= NEAR:
            return
        ppm = view.pixels_per_metre(self.z)
        for dx, dy, radius, colour in self.blobs:
            u, v = view.project(self.xr + dx, dy, self.z)
            view.canvas.disc(float(u), float(v), radius * ppm, colour, VEGETATION)


@dataclass
class Hedge:
    side: int
    xr: float
    z0: float
    z1: float
    height: float
    colour: tuple

    def draw(self, view: View, world: World) -> None:
        if view.wall_x(self.xr, self.z0, self.z1, 0.0, self.height, self.colour, VEGETATION):
            view.wall_z(self.z0, self.xr, self.xr + self.side * 0.8, 0.0, self.height,
                        _scaled(self.colour, 0.8), VEGETATION)
            view.roof(self.height, self.xr, self.xr + self.side * 0.8, self.z0, self.z1,
                      _scaled(self.colour, 1.15), VEGETATION)


@dataclass
class Pole:
    side: int
    xr: float
    z: float
    height: float
    width: float
    arm: float  # length of the lamp arm over the road (0: none)
    colour: tuple

    def draw(self, view: View, world: World) -> None:
        if view.depth(self.z) <= NEAR:
            return
        half = self.width / 2
        view.wall_z(self.z, self.xr - half, self.xr + half, 0.0, self.height, self.colour, POLE)
        if self.arm > 0:
            tip = self.xr - self.side * self.arm
            x0, x1 = sorted((self.xr, tip))
            view.wall_z(self.z, x0, x1, self.height - 0.12, self.height, self.colour, POLE)
            view.wall_z(self.z, tip - 0.3, tip + 0.3, self.height - 0.3, self.height,
                        _scaled(self.colour, 1.3), POLE)


@dataclass
class Car:
    xr: float
    z0: float         # the end nearest the camera at time 0
    speed: float      # metres per frame along z
    length: float
    width: float
    body_height: float
    cabin_height: float
    colour: tuple
    glass: tuple
    facing_away: bool  # the camera sees its rear (same direction) or its front

    def at(self, frame: int) -> float:
        return self.z0 + self.speed * frame

    def draw(self, view: View, world: World, z: float, road_colour) -> None:
        if view.depth(z) <= NEAR + 0.5:
            return
        c = view.canvas
        x0, x1 = self.xr - self.width / 2, self.xr + self.width / 2
        z1 = z + self.length
        hb, ht = self.body_height, self.body_height + self.cabin_height
        ppm = view.pixels_per_metre(z)
        # where the camera is relative to the car's sides, in road coordinates at its depth
        cam_xr = view.cam.x - world.road_centre(z) + view.cam.slope * view.depth(z)
        shadow = np.array([[[x0 - 0.15, z - 0.2], [x1 + 0.15, z - 0.2],
                            [x1 + 0.15, z1 + 0.1], [x0 - 0.15, z1 + 0.1]]])
        view.ground_quads(shadow, _scaled(road_colour, 0.45), ROAD)
        side_x = x0 if cam_xr < x0 else x1 if cam_xr > x1 else None
        cz0, cz1 = z + 0.28 * self.length, z1 - 0.3 * self.length
        if not self.facing_away:
            cz0, cz1 = z + 0.3 * self.length, z1 - 0.25 * self.length
        inset = 0.12
        detailed = ppm * self.width > 10
        if side_x is not None:
            view.wall_x(side_x, z, z1, 0.2, hb, self.colour, CAR)
            sx = side_x + (inset if side_x == x0 else -inset)
            view.wall_x(sx, cz0, cz1, hb, ht, self.glass, CAR)
            if detailed:
                for wz in (z + 0.75, z1 - 0.75):
                    ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
                    pts = view.points(side_x, 0.33 + 0.33 * np.sin(ang), wz + 0.33 * np.cos(ang))
                    c.polys([pts], (22, 22, 24), CAR)
        view.roof(hb, x0, x1, z, z1, _scaled(self.colour, 1.1), CAR)
        view.roof(ht, x0 + inset, x1 - inset, cz0, cz1, self.colour, CAR)
        # end face nearest the camera: body, window, tyres, lights
        view.wall_z(z, x0 + 0.2, x0 + 0.45, 0.0, 0.3, (22, 22, 24), CAR)
        view.wall_z(z, x1 - 0.45, x1 - 0.2, 0.0, 0.3, (22, 22, 24), CAR)
        view.wall_z(z, x0, x1, 0.22, hb, self.colour, CAR)
        view.wall_z(cz0, x0 + inset, x1 - inset, hb, ht, self.glass, CAR)
        if detailed:
            light = (190, 30, 25) if self.facing_away else (235, 235, 210)
            lh0, lh1 = hb - 0.25, hb - 0.08
            view.wall_z(z, x0 + 0.08, x0 + 0.35, lh0, lh1, light, CAR)
            view.wall_z(z, x1 - 0.35, x1 - 0.08, lh0, lh1, light, CAR)
            view.wall_z(z, self.xr - 0.26, self.xr + 0.26, 0.38, 0.5, (220, 220, 205), CAR)


@dataclass
class Person:
    xr: float
    z0: float
    speed: float      # metres per frame along z (0 in still frames, walkers included)
    walking: bool     # legs and arms swing
    height: float
    phase: float
    shirt: tuple
    trousers: tuple
    skin: tuple
    hair: tuple

    def at(self, frame: int) -> float:
        return self.z0 + self.speed * frame

    def draw(self, view: View, world: World, z: float, frame: int) -> None:
        if view.depth(z) <= NEAR:
            return
        h = self.height
        ppm = view.pixels_per_metre(z)
        c = view.canvas

        def wz(xs, ys):  # body-relative metres to pixels at the person's depth
            return view.points(self.xr + np.asarray(xs), np.asarray(ys), z)

        if ppm * h < 6:
            c.polys([wz([-0.12 * h, 0.12 * h, 0.12 * h, -0.12 * h], [0, 0, h, h])],
                    self.shirt, PERSON)
            return
        swing = math.sin(self.phase + 0.45 * frame) * (0.09 * h if self.walking else 0.02 * h)
        hip, shoulder = 0.5 * h, 0.8 * h
        for sign in (-1, 1):
            foot = sign * (0.05 * h + swing)
            c.polys([wz([sign * 0.015 * h, sign * 0.09 * h, foot + 0.035 * h, foot - 0.035 * h],
                        [hip, hip, 0, 0])], self.trousers, PERSON)
            hand = sign * (0.16 * h) - swing * 0.6
            c.polys([wz([sign * 0.11 * h, sign * 0.15 * h, hand + 0.025 * h, hand - 0.025 * h],
                        [shoulder, shoulder - 0.04 * h, 0.45 * h, 0.45 * h])], self.shirt,
                    PERSON)
        c.polys([wz([-0.09 * h, 0.09 * h, 0.13 * h, -0.13 * h], [hip, hip, shoulder, shoulder])],
                self.shirt, PERSON)
        c.polys([wz([-0.025 * h, 0.025 * h, 0.025 * h, -0.025 * h],
                    [shoulder - 0.01 * h, shoulder - 0.01 * h, 0.86 * h, 0.86 * h])],
                self.skin, PERSON)
        hu, hv = view.project(self.xr, 0.915 * h, z)
        c.disc(float(hu), float(hv) - 0.012 * h * ppm, 0.068 * h * ppm, self.hair, PERSON)
        c.disc(float(hu), float(hv) + 0.008 * h * ppm, 0.058 * h * ppm, self.skin, PERSON)


# the world --------------------------------------------------------------------------------

class World:
    """One street world: its layout, colours, lighting and camera path.

    `key` identifies it (tuple of non-negative ints); `still` makes a single random view
    of the world's start instead of a drive along it.
    """

    def __init__(self, key: tuple[int, ...], width: int, height: int, still: bool):
        self.key, self.width, self.height, self.still = tuple(key), width, height, still
        self._segments: dict[tuple[int, int], list] = {}
        rng = self.rng(0)
        # road and its surroundings
        self.lanes = int(rng.choice([2, 2, 3, 4]))
        self.lane_width = rng.uniform(2.9, 3.7)
        self.parking = [rng.random() < 0.5, rng.random() < 0.5]  # left, right
        self.road_width = self.lanes * self.lane_width + 2.3 * sum(self.parking)
        self.sidewalk = [rng.uniform(1.5, 4.5), rng.uniform(1.5, 4.5)]
        self.verge = [rng.uniform(1, 4) if rng.random() < 0.35 else 0.0 for _ in range(2)]
        self.kind = [_choice(rng, ("urban", "urban", "suburban", "green")) for _ in range(2)]
        amplitude = rng.uniform(3, 18) if rng.random() < 0.6 else 0.0
        self.bend = (amplitude, 2 * np.pi / rng.uniform(180, 450), rng.uniform(0, 2 * np.pi))
        # colours
        grey = rng.uniform(55, 135)
        self.asphalt = _jitter(rng, (grey, grey, grey + 3), 6)
        self.patch = _scaled(self.asphalt, rng.uniform(0.8, 1.2))
        self.sidewalk_colour = _jitter(rng, _choice(rng, SIDEWALK_COLOURS), 18)
        self.curb_colour = _scaled(self.sidewalk_colour, rng.uniform(1.05, 1.25))
        self.grass = _jitter(rng, (rng.uniform(60, 110), rng.uniform(100, 150), 50), 15)
        self.ground_paved = rng.random() < 0.4
        self.marking = _jitter(rng, (232, 232, 226), 15)
        self.centre_yellow = _jitter(rng, (225, 190, 60), 15) if rng.random() < 0.3 else None
        self.dash_period = rng.uniform(8, 13)
        self.dash_length = rng.uniform(2.5, 4.5)
        self.line_width = rng.uniform(0.12, 0.2)
        self.edge_lines = rng.random() < 0.6
        sky_kind, *self.sky = self._sky(rng)
        self.clouds = [(rng.uniform(-1.2, 1.2), rng.uniform(0.05, 0.5), rng.uniform(0.05, 0.2),
                        rng.uniform(0.015, 0.05), _jitter(rng, (235, 238, 242), 12))
                       for _ in range(int(rng.integers(0, 6)) if sky_kind == "clear" else 0)]
        self.skyline = self._skyline(rng)
        # traffic: lane directions (right-hand traffic) and steady speeds per lane
        self.speed = rng.uniform(0.5, 1.1)  # camera metres per frame
        first = -self.road_width / 2 + 2.3 * self.parking[0]
        self.lane_centres = [first + (i + 0.5) * self.lane_width for i in range(self.lanes)]
        same_dir = [i for i, x in enumerate(self.lane_centres) if x > 0] or [self.lanes - 1]
        self.ego_lane = int(_choice(rng, same_dir))
        self.lane_speed, self.lane_density = [], []
        for i, x in enumerate(self.lane_centres):
            if i == self.ego_lane:
                # cars ahead in the camera's lane pull away instead of being run into
                speed = self.speed * rng.uniform(1.05, 1.25)
            elif x > 0:
                speed = self.speed * rng.uniform(0.3, 0.85)
            else:
                speed = -self.speed * rng.uniform(0.3, 0.9)
            self.lane_speed.append(0.0 if still else speed)
            self.lane_density.append(rng.uniform(0.15, 0.6))
        self.walk = [rng.uniform(0.04, 0.14), -rng.uniform(0.04, 0.14), 0.0]
        self.crowd = rng.uniform(0.2, 1.0)
        # camera
        self.cam_height = rng.uniform(1.2, 1.9)
        self.focal = width * rng.uniform(0.6, 1.0)
        self.horizon = height * rng.uniform(0.36, 0.55)
        self.cam_offset = rng.uniform(-0.35, 0.35) * self.lane_width
        self.yaw = rng.uniform(-0.08, 0.08)
        # lighting, fixed for a world; the noise is drawn per frame
        self.brightness = rng.uniform(-30, 25)
        self.contrast = rng.uniform(0.7, 1.2)
        self.cast = rng.uniform(0.9, 1.1, 3).astype(np.float32)
        self.gradient = (rng.uniform(0, 0.45), rng.uniform(0, 2 * np.pi))
        self.blotches = rng.uniform(-0.12, 0.12, (4, 8)).astype(np.float32)
        self.noise = rng.uniform(1.0, 7.0)
        self.blur = rng.uniform(0.3, 1.1) if rng.random() < 0.6 else 0.0

    # geometry ---------------------------------------------------------------------------

    def rng(self, *parts: int) -> np.random.Generator:
        return np.random.default_rng([*self.key, *parts])

    def road_centre(self, z):
        amplitude, omega, phase = self.bend
        return amplitude * np.sin(omega * np.asarray(z) + phase)

    def road_heading(self, z: float) -> float:
        amplitude, omega, phase = self.bend
        return float(amplitude * omega * np.cos(omega * z + phase))

    def z_samples(self, z0: float, z1: float) -> np.ndarray:
        """Depths at which a curve along the road is sampled (2 on a straight road)."""
        if self.bend[0] == 0.0:
            return np.array([z0, z1])
        return np.geomspace(z0, z1, 4 if z1 - z0 < 30 else 18)

    def curb_x(self, side: int) -> float:
        return side * self.road_width / 2

    def sidewalk_x(self, side: int) -> float:
        return side * (self.road_width / 2 + self.sidewalk[side > 0])

    def facade_x(self, side: int) -> float:
        return side * (self.road_width / 2 + self.sidewalk[side > 0] + self.verge[side > 0])

    def camera(self, frame: int) -> Camera:
        if self.still:
            z = START_Z
            rng = self.rng(1)
            slope = self.road_heading(z) + rng.uniform(-0.05, 0.05)
            bob, sway = 0.0, 0.0
        else:
            z = START_Z + self.speed * frame
            slope = self.road_heading(z)
            bob = math.sin(0.7 * frame) * 0.6
            sway = math.sin(0.05 * frame) * 0.01
        return Camera(
            z=z, x=float(self.road_centre(z)) + self.lane_centres[self.ego_lane] + self.cam_offset,
            height=self.cam_height, slope=slope, focal=self.focal, cx=self.width / 2,
            horizon=self.horizon + bob, yaw_px=self.focal * (self.yaw + sway))

    # colours ----------------------------------------------------------------------------

    @staticmethod
    def _sky(rng) -> tuple[str, tuple, tuple]:
        """(kind, colour at the top, colour at the horizon)."""
        kind = _choice(rng, ("clear", "clear", "overcast", "dusk", "haze"))
        if kind == "clear":
            top, low = (rng.uniform(40, 90), rng.uniform(90, 130), rng.uniform(170, 220)), \
                (rng.uniform(160, 200), rng.uniform(190, 215), rng.uniform(220, 245))
        elif kind == "overcast":
            g = rng.uniform(140, 200)
            top, low = (g, g, g + 5), (g + 25, g + 25, g + 28)
        elif kind == "dusk":
            top, low = (rng.uniform(50, 90), 70, rng.uniform(120, 160)), \
                (rng.uniform(220, 250), rng.uniform(140, 180), 110)
        else:
            top, low = (200, 205, 210), (230, 230, 228)
        return kind, _jitter(rng, top, 10), _jitter(rng, low, 10)

    def _skyline(self, rng):
        """Distant buildings or tree line on the horizon: (angle, width, height, cls, colour)."""
        items, angle = [], -1.5
        vegetation = rng.random() < 0.4
        while angle < 1.5:
            width = rng.uniform(0.02, 0.12)
            if vegetation or rng.random() < 0.25:
                items.append((angle, width, rng.uniform(0.01, 0.04), VEGETATION,
                              _jitter(rng, (60, 90, 55), 15)))
            else:
                items.append((angle, width, rng.uniform(0.01, 0.08), BUILDING,
                              _jitter(rng, (150, 155, 165), 30)))
            angle += width * rng.uniform(0.5, 1.1)
        return items

    # scenery ----------------------------------------------------------------------------

    def segment(self, index: int, side: int) -> list:
        """Static scenery of one side of one 25 m segment (cached)."""
        cache_key = (index, side)
        if cache_key not in self._segments:
            if len(self._segments) > 256:
                self._segments.clear()
            self._segments[cache_key] = self._make_segment(index, side)
        return self._segments[cache_key]

    def _make_segment(self, index: int, side: int) -> list:
        rng = self.rng(2, index, side > 0)
        kind = self.kind[side > 0]
        start = index * SEGMENT
        items: list = []
        xf = self.facade_x(side)
        if kind in ("urban", "suburban"):
            z = start + rng.uniform(0, 2 if kind == "urban" else 6)
            while z < start + SEGMENT - 4:
                length = min(rng.uniform(6, 22), start + SEGMENT - z)
                if kind == "urban" or rng.random() < 0.6:
                    items.append(self._building(rng, side, z, z + length, kind))
                elif rng.random() < 0.6:
                    items.append(Hedge(side, xf, z, z + length * rng.uniform(0.4, 1),
                                       rng.uniform(0.8, 1.8), _jitter(rng, (50, 95, 40), 18)))
                z += length + (rng.uniform(0, 2.5) if kind == "urban" else rng.uniform(2, 9))
        else:
            for _ in range(int(rng.integers(2, 5))):
                x = xf + side * rng.uniform(0.5, 12)
                items.append(self._tree(rng, x, start + rng.uniform(0, SEGMENT), big=True))
        greenery = {"urban": 0.5, "suburban": 1.2, "green": 2.0}[kind]
        for _ in range(rng.poisson(greenery)):
            z = start + rng.uniform(0, SEGMENT)
            if self.verge[side > 0] > 0 and rng.random() < 0.5:
                x = self.sidewalk_x(side) + side * rng.uniform(0.3, self.verge[side > 0])
                items.append(self._bush(rng, x, z))
            else:
                x = self.curb_x(side) + side * rng.uniform(0.6, 1.2)
                items.append(self._tree(rng, x, z, big=False))
        if rng.random() < 0.7:
            x = self.curb_x(side) + side * rng.uniform(0.3, 0.6)
            items.append(Pole(side, x, start + rng.uniform(0, SEGMENT), rng.uniform(4.5, 9),
                              rng.uniform(0.12, 0.3),
                              rng.uniform(0.8, 2.5) if rng.random() < 0.6 else 0.0,
                              _jitter(rng, _choice(rng, ((120, 120, 120), (60, 80, 60),
                                                         (45, 45, 48), (160, 160, 155))), 15)))
        return items

    def _building(self, rng, side, z0, z1, kind) -> Building:
        colour = _jitter(rng, _choice(rng, BUILDING_COLOURS), 22)
        window = _jitter(rng, _choice(rng, ((40, 45, 55), (90, 115, 140), (175, 185, 195),
                                            (60, 55, 50))), 15)
        tall = (6, 35) if kind == "urban" else (4, 10)
        return Building(side, z0, z1, rng.uniform(*tall), rng.uniform(6, 15), colour, window,
                        rng.uniform(2.8, 3.6), rng.uniform(2.2, 4.0),
                        (rng.uniform(0.35, 0.7), rng.uniform(0.4, 0.65)),
                        _scaled(colour, rng.uniform(0.6, 1.0)))

    def _tree(self, rng, x, z, big: bool) -> Tree:
        radius = rng.uniform(2.0, 4.5) if big else rng.uniform(1.2, 2.8)
        base = (rng.uniform(35, 95), rng.uniform(80, 140), rng.uniform(25, 70))
        crown = [(0.0, radius * 0.8, radius, _jitter(rng, base, 10))]
        for _ in range(int(rng.integers(2, 6))):
            crown.append((rng.uniform(-0.6, 0.6) * radius, radius * rng.uniform(0.5, 1.3),
                          radius * rng.uniform(0.4, 0.75), _jitter(rng, base, 22)))
        return Tree(x, z, rng.uniform(1.6, 3.5) if big else rng.uniform(1.5, 2.5),
                    rng.uniform(0.2, 0.5), crown,
                    _jitter(rng, (rng.uniform(70, 110), 65, 45), 15))

    def _bush(self, rng, x, z) -> Bush:
        base = (rng.uniform(40, 90), rng.uniform(85, 135), rng.uniform(30, 60))
        size = rng.uniform(0.4, 1.0)
        blobs = [(rng.uniform(-1, 1) * size, size * rng.uniform(0.4, 0.9),
                  size * rng.uniform(0.5, 1.0), _jitter(rng, base, 15))
                 for _ in range(int(rng.integers(2, 5)))]
        return Bush(x, z, blobs)

    # traffic and pedestrians ------------------------------------------------------------

    def _cars_of(self, track: int, index: int) -> list[Car]:
        """Cars whose start lies in segment `index` of a lane (track < lanes) or a parking
        strip (track lanes: left, lanes + 1: right)."""
        rng = self.rng(3, track, index)
        start = index * SEGMENT
        if track < self.lanes:
            slots = [start + rng.uniform(0, SEGMENT - 6)] \
                if rng.random() < self.lane_density[track] else []
            x = self.lane_centres[track] + rng.uniform(-0.3, 0.3)
            speed = self.lane_speed[track]
            away = x > 0
        else:
            side = -1 if track == self.lanes else 1
            slots = [start + j * 6.2 + rng.uniform(0, 0.6) for j in range(4) if rng.random() < 0.55]
            x = self.curb_x(side) - side * 1.15
            speed = 0.0
            away = None
        cars = []
        for z in slots:
            length = rng.uniform(3.8, 5.2)
            tall = rng.random() < 0.2
            cars.append(Car(x + rng.uniform(-0.1, 0.1), z, speed, length, rng.uniform(1.65, 2.0),
                            rng.uniform(0.85, 1.05) + (0.35 if tall else 0.0),
                            rng.uniform(0.45, 0.65),
                            _jitter(rng, _choice(rng, CAR_COLOURS), 14),
                            _jitter(rng, (45, 55, 65), 15),
                            bool(rng.random() < 0.5) if away is None else away))
        return cars

    def _people_of(self, side: int, track: int, index: int) -> list[Person]:
        rng = self.rng(4, side > 0, track, index)
        people = []
        speed = 0.0 if self.still else self.walk[track]
        for _ in range(rng.poisson(self.crowd)):
            x = self.curb_x(side) + side * rng.uniform(0.4, self.sidewalk[side > 0] - 0.3)
            shirt = tuple(int(c) for c in rng.uniform(15, 230, 3))
            trousers = _jitter(rng, _choice(rng, ((40, 45, 70), (30, 30, 30), (110, 100, 90),
                                                  (70, 80, 110))), 20)
            people.append(Person(x, index * SEGMENT + rng.uniform(0, SEGMENT), speed,
                                 self.walk[track] != 0.0, rng.uniform(1.5, 1.95), rng.uniform(0, 2 * np.pi), shirt,
                                 trousers, _jitter(rng, _choice(rng, SKIN), 12),
                                 _jitter(rng, (45, 35, 25), 20)))
        return people

    @staticmethod
    def _segments_for(lo: float, hi: float) -> range:
        return range(max(0, int(lo // SEGMENT)), int(hi // SEGMENT) + 1)

    def movers(self, frame: int, cam_z: float) -> list[tuple[float, object]]:
        """(z, car or person) of everything moving that may be in view at `frame`."""
        out = []
        tracks = [(t, self.lane_speed[t]) for t in range(self.lanes)]
        tracks += [(self.lanes + i, 0.0) for i in range(2) if self.parking[i]]
        for track, speed in tracks:
            shift = speed * frame
            for s in self._segments_for(cam_z - shift - SEGMENT, cam_z + MOVER_FAR - shift):
                for car in self._cars_of(track, s):
                    if track == self.ego_lane and car.z0 < START_Z + EGO_GAP[not self.still]:
                        continue  # it would start on or behind the camera in its own lane
                    z = car.at(frame)
                    if cam_z + NEAR < z < cam_z + MOVER_FAR:
                        out.append((z, car))
        for side in (-1, 1):
            for track, speed in enumerate(self.walk):
                shift = (0.0 if self.still else speed) * frame
                for s in self._segments_for(cam_z - shift - SEGMENT, cam_z + MOVER_FAR - shift):
                    for person in self._people_of(side, track, s):
                        z = person.at(frame)
                        if cam_z + NEAR < z < cam_z + MOVER_FAR:
                            out.append((z, person))
        return out

    # rendering --------------------------------------------------------------------------

    def render(self, frame: int, effects: bool = True) -> Canvas:
        cam = self.camera(frame)
        h, w = self.height, self.width
        canvas = Canvas(np.empty((h, w, 3), np.uint8), np.empty((h, w), np.uint8))
        view = View(self, cam, canvas)
        self._draw_sky(view)
        self._draw_ground(view)
        static = []
        for s in self._segments_for(cam.z - SEGMENT, cam.z + STATIC_FAR):
            for side in (-1, 1):
                static.extend(self.segment(s, side))
        # facades stand behind everything on the street side of them: draw them first
        buildings = [b for b in static if isinstance(b, Building | Hedge)]
        for b in sorted(buildings, key=lambda b: -b.z0):
            b.draw(view, self)
        street = [(item.z, item) for item in static if not isinstance(item, Building | Hedge)]
        street += self.movers(frame, cam.z)
        for z, item in sorted(street, key=lambda pair: -pair[0]):
            if isinstance(item, Car):
                item.draw(view, self, z, self.asphalt)
            elif isinstance(item, Person):
                item.draw(view, self, z, frame)
            else:
                item.draw(view, self)
        if effects:
            canvas.rgb = self._effects(canvas.rgb, frame)
        return canvas

    def _draw_sky(self, view: View) -> None:
        c, cam = view.canvas, view.cam
        top, low = self.sky
        horizon = cam.horizon
        bands = 24
        edges = np.linspace(0, max(horizon, 1.0), bands + 1)
        c.rgb[:] = low
        c.label[:] = SKY
        c.colours[SKY].add(low)
        for i in range(bands):
            t = i / (bands - 1)
            colour = tuple(int(a + (b - a) * t) for a, b in zip(top, low, strict=True))
            rect = np.array([[-1, edges[i]], [self.width + 1, edges[i]],
                             [self.width + 1, edges[i + 1] + 1], [-1, edges[i + 1] + 1]])
            c.polys([rect], colour, SKY)
        vp = cam.cx + cam.yaw_px - cam.focal * cam.slope
        for angle, height, width, thick, colour in self.clouds:
            u = vp + angle * cam.focal
            v = horizon - height * cam.focal
            ellipse = cv2.ellipse2Poly((0, 0), (100, 100), 0, 0, 360, 30).astype(np.float64)
            ellipse = ellipse * [width * cam.focal / 100, thick * cam.focal / 100] + [u, v]
            c.polys([ellipse], colour, SKY)
        for angle, width, height, cls, colour in self.skyline:
            u0 = vp + angle * cam.focal
            rect = np.array([[u0, horizon + 2], [u0 + width * cam.focal, horizon + 2],
                             [u0 + width * cam.focal, horizon - height * cam.focal],
                             [u0, horizon - height * cam.focal]])
            c.polys([rect], colour, cls)

    def _draw_ground(self, view: View) -> None:
        c, cam = view.canvas, view.cam
        h, w = self.height, self.width
        ground = (self.sidewalk_colour, SIDEWALK) if self.ground_paved else (self.grass, VEGETATION)
        horizon_row = cam.horizon + cam.focal * cam.height / GROUND_FAR
        c.polys([np.array([[-1, horizon_row], [w + 1, horizon_row], [w + 1, h + 1], [-1, h + 1]])],
                ground[0], ground[1])
        for side in (-1, 1):
            i = side > 0
            if self.verge[i] > 0:
                view.ground_strip(self.sidewalk_x(side), self.facade_x(side) + side * 0.01,
                                  self.grass, VEGETATION)
            view.ground_strip(self.curb_x(side), self.sidewalk_x(side), self.sidewalk_colour,
                              SIDEWALK)
            view.ground_strip(self.curb_x(side), self.curb_x(side) + side * 0.25,
                              self.curb_colour, SIDEWALK)
        view.ground_strip(-self.road_width / 2, self.road_width / 2, self.asphalt, ROAD)
        lo, hi = cam.z + NEAR, cam.z + 90.0
        patches = []
        for s in self._segments_for(lo - SEGMENT, hi):
            rng = self.rng(5, s)
            for _ in range(int(rng.integers(0, 3))):
                x = rng.uniform(-0.5, 0.5) * self.road_width
                z = s * SEGMENT + rng.uniform(0, SEGMENT)
                a, b = rng.uniform(0.5, 2.5), rng.uniform(1, 6)
                patches.append([[x - a, z], [x + a, z + rng.uniform(-0.5, 0.5)],
                                [x + a * rng.uniform(0.6, 1.2), z + b], [x - a, z + b]])
        view.ground_quads(np.array(patches).reshape(-1, 4, 2), self.patch, ROAD)
        self._draw_markings(view, lo, hi)

    def _draw_markings(self, view: View, lo: float, hi: float) -> None:
        half = self.line_width / 2
        if self.edge_lines:
            for side in (-1, 1):
                x = self.curb_x(side) - side * (0.35 + 2.3 * self.parking[side > 0])
                view.ground_strip(x - half, x + half, self.marking, MARKING)
        period = self.dash_period
        starts = np.arange(math.floor(lo / period) * period, hi, period)
        boundaries = [self.lane_centres[i] + self.lane_width / 2 for i in range(self.lanes - 1)]
        for x in boundaries:
            centre = abs(x) < self.lane_width / 2 and self.centre_yellow is not None
            if centre:
                for off in (-0.12, 0.12):
                    view.ground_strip(x + off - half, x + off + half, self.centre_yellow, MARKING)
                continue
            quads = np.stack([np.stack([np.full_like(starts, x - half), starts], -1),
                              np.stack([np.full_like(starts, x + half), starts], -1),
                              np.stack([np.full_like(starts, x + half), starts + self.dash_length], -1),
                              np.stack([np.full_like(starts, x - half), starts + self.dash_length], -1)],
                             axis=1)
            view.ground_quads(quads, self.marking, MARKING)
        for s in self._segments_for(lo, hi):
            rng = self.rng(6, s)
            if rng.random() < 0.12:
                z = s * SEGMENT + rng.uniform(0, SEGMENT - 4)
                depth = rng.uniform(2.5, 4)
                xs = np.arange(-self.road_width / 2 + 0.3, self.road_width / 2 - 0.5, 1.0)
                quads = np.stack([np.stack([xs, np.full_like(xs, z)], -1),
                                  np.stack([xs + 0.5, np.full_like(xs, z)], -1),
                                  np.stack([xs + 0.5, np.full_like(xs, z + depth)], -1),
                                  np.stack([xs, np.full_like(xs, z + depth)], -1)], axis=1)
                view.ground_quads(quads, self.marking, MARKING)

    def _effects(self, rgb: np.ndarray, frame: int) -> np.ndarray:
        """Lighting, colour cast, blur and sensor noise: the image only, never the label."""
        h, w = self.height, self.width
        strength, angle = self.gradient
        ys = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
        xs = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
        gain = 1.0 + strength * (math.cos(angle) * xs + math.sin(angle) * ys)
        gain = gain + cv2.resize(self.blotches, (w, h), interpolation=cv2.INTER_CUBIC)
        img = rgb.astype(np.float32)
        img *= gain[:, :, None] * (self.cast * self.contrast)
        img += self.brightness + 128.0 * (1.0 - self.contrast)
        if self.blur > 0:
            img = cv2.GaussianBlur(img, (0, 0), self.blur)
        rng = self.rng(7, frame)
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(self.noise)
        np.clip(img + 0.5, 0, 255, out=img)
        return img.astype(np.uint8)
