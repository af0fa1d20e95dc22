"""Reading and writing rosbag2 bags (sqlite3 and MCAP storage) with the `rosbags` library.

Input: a rosbag2 folder (with or without its metadata.yaml), a `.mcap` file or a `.db3`
file. A bag whose storage is damaged (a truncated recording, a copy cut short) is opened
in salvage mode: its messages are read in file order up to the damage, and the reason is
kept in `InputBag.damage` so that the caller can say how far it got. A storage error in
the middle of an intact-looking bag surfaces as `BagDamaged` from `InputBag.messages`.

Output: `OutputBag` writes a rosbag2 folder, by default in MCAP storage (Foxglove opens it
directly; `ros2 bag play` reads it on Iron and newer, on Humble with the
rosbag2_storage_mcap plugin), or in sqlite3 storage. Metadata is written in rosbag2
format version 8 (the oldest the rosbags writer offers) with no QoS overrides.
"""

from __future__ import annotations

import mmap
import sqlite3
import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.rosbag2.storage_mcap import decompress as mcap_decompress
from rosbags.typesys import Stores, get_typestore

from swiftseg_ros.errors import SwiftsegError

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
DIAGNOSTIC_ARRAY_TYPE = "diagnostic_msgs/msg/DiagnosticArray"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
OUTPUT_STORAGES = ("mcap", "sqlite3")
STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}

# The message definitions are the same in every ROS 2 distribution for the types used here.
TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)


class BagError(SwiftsegError):
    """A bag that cannot be read or written at all (missing, not a bag, unreadable)."""


class BagDamaged(Exception):
    """The storage failed in the middle of reading: the messages before it were read."""


class MalformedMessage(ValueError):
    """A message whose serialized bytes do not decode as its type."""


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    timestamp: int  # bag (receive) time, ns
    data: bytes | memoryview


@dataclass
class TopicInfo:
    msgtype: str
    count: int | None  # None when a damaged bag's index is lost


def msg_class(msgtype: str):
    """The message class for a ROS 2 type name, e.g. `sensor_msgs/msg/Image`."""
    return TYPESTORE.types[msgtype]


def deserialize(message: BagMessage):
    """Decode a message's CDR bytes; raises MalformedMessage when they do not decode."""
    try:
        return TYPESTORE.deserialize_cdr(message.data, message.msgtype)
    except Exception as exc:  # the CDR decoder raises many types on bad bytes; all mean one thing
        raise MalformedMessage(f"undecodable {message.msgtype} message ({type(exc).__name__}: "
                               f"{exc})") from exc


def serialize(msg) -> bytes:
    return bytes(TYPESTORE.serialize_cdr(msg, msg.__msgtype__))


# --- input -------------------------------------------------------------------------------


class InputBag:
    """An opened input bag: its topics and an iterator over chosen topics' messages."""

    def __init__(self, path: Path, storage: str, sources: list, damage: str | None = None):
        self.path = path
        self.storage = storage
        self.damage = damage
        self._sources = sources
        self.topics: dict[str, TopicInfo] = {}
        for source in sources:
            for topic, msgtype, count in source.connections():
                info = self.topics.setdefault(topic, TopicInfo(msgtype, 0))
                if info.msgtype != msgtype:
                    raise BagError(f"{path}: topic {topic} holds two message types "
                                   f"({info.msgtype}, {msgtype}); replay needs one type per topic")
                info.count = None if count is None or info.count is None else info.count + count

    @property
    def salvaged(self) -> bool:
        return self.damage is not None

    def image_topics(self) -> list[str]:
        return sorted(t for t, info in self.topics.items() if info.msgtype in IMAGE_TYPES)

    def messages(self, topics: Collection[str]) -> Iterator[BagMessage]:
        """The chosen topics' messages in bag order; raises BagDamaged where storage fails."""
        wanted = set(topics)
        for source in self._sources:
            yield from source.messages(wanted)

    def close(self) -> None:
        for source in self._sources:
            source.close()
        self._sources = []

    def __enter__(self) -> InputBag:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _RosbagsSource:
    """A bag (folder or single storage file) read through rosbags' Reader."""

    def __init__(self, path: Path):
        self.reader = Reader(path)
        self.reader.open()

    def connections(self):
        return [(c.topic, c.msgtype, c.msgcount) for c in self.reader.connections]

    def messages(self, topics: set[str]) -> Iterator[BagMessage]:
        conns = [c for c in self.reader.connections if c.topic in topics]
        if not conns:
            return
        iterator = self.reader.messages(connections=conns)
        while True:
            try:
                conn, timestamp, data = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # any storage-layer failure means the data past it is lost
                raise BagDamaged(_reason(exc)) from exc
            yield BagMessage(conn.topic, conn.msgtype, timestamp, data)

    def close(self) -> None:
        if self.reader.is_open:
            self.reader.close()


class _SqliteSalvage:
    """A damaged .db3 file read row by row in recording order, up to the first bad page."""

    def __init__(self, path: Path):
        self.path = path
        # immutable: never touch a damaged file; writable_schema: accept a header that claims
        # more pages than the truncated file holds (read-only connection, nothing is written).
        self.db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        try:
            self.db.execute("PRAGMA writable_schema=ON")
            rows = self.db.execute("SELECT id, name, type FROM topics").fetchall()
        except sqlite3.Error:
            self.db.close()
            raise
        self.topics = {int(i): (str(name), str(msgtype)) for i, name, msgtype in rows}

    def connections(self):
        return [(name, msgtype, None) for name, msgtype in self.topics.values()]

    def messages(self, topics: set[str]) -> Iterator[BagMessage]:
        ids = {i: t for i, t in self.topics.items() if t[0] in topics}
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        cursor = self.db.execute(
            f"SELECT topic_id, timestamp, data FROM messages WHERE topic_id IN ({marks}) "
            "ORDER BY rowid", tuple(ids))
        while True:
            try:
                row = cursor.fetchone()
            except sqlite3.Error as exc:
                raise BagDamaged(f"{self.path}: {exc}") from exc
            if row is None:
                return
            topic, msgtype = ids[row[0]]
            yield BagMessage(topic, msgtype, int(row[1]), row[2])

    def close(self) -> None:
        self.db.close()


_MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_FOOTER, _OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x02, 0x03, 0x04, 0x05, 0x06


class _McapSalvage:
    """A damaged .mcap file scanned record by record from its start, up to the damage.

    Reads what an intact file's index would point to, without the index: schemas, channels
    and messages in file order, including the complete records of a cut-off uncompressed
    chunk (recorders keep whole runs of messages in one chunk).
    """

    def __init__(self, path: Path):
        self.path = path
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, tuple[str, str]] = {}
        self.counts: dict[int, int] = {}
        self.damage: str | None = None
        with path.open("rb") as bio:
            head = bio.read(8)
        if head != _MCAP_MAGIC:
            raise BagError(f"{path}: not an MCAP file (it does not start with the MCAP magic)")
        try:
            for channel_id, _, _ in self._scan(None):
                self.counts[channel_id] = self.counts.get(channel_id, 0) + 1
        except BagDamaged as exc:
            self.damage = str(exc)

    def connections(self):
        return [(topic, msgtype, self.counts.get(i, 0)) for i, (topic, msgtype)
                in self.channels.items()]

    def messages(self, topics: set[str]) -> Iterator[BagMessage]:
        wanted = {i for i, (topic, _) in self.channels.items() if topic in topics}
        for channel_id, timestamp, data in self._scan(wanted):
            topic, msgtype = self.channels[channel_id]
            yield BagMessage(topic, msgtype, timestamp, data)

    def close(self) -> None:
        pass

    def _scan(self, wanted: set[int] | None) -> Iterator[tuple[int, int, bytes]]:
        with self.path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield from self._records(data, len(_MCAP_MAGIC), wanted)

    def _records(self, data: bytes, pos: int, wanted, in_chunk: bool = False, cut: bool = False):
        """Messages of the records from `pos`; in a cut-off chunk, stop at its partial record."""
        end = len(data)
        while pos < end:
            if not in_chunk and data[pos] == _OP_FOOTER:
                return
            body_start = pos + 9
            complete = body_start <= end
            body_end = body_start + struct.unpack_from("<Q", data, pos + 1)[0] if complete else end
            complete = complete and body_end <= end
            if not complete and cut:
                return
            op = data[pos]
            if op == _OP_CHUNK and not in_chunk and body_start <= end:
                yield from self._chunk(data, body_start, min(body_end, end), wanted)
            if not complete:
                where = "a chunk at" if in_chunk else "byte"
                raise BagDamaged(f"{self.path}: truncated at {where} {end}, inside a record that "
                                 f"starts at byte {pos}")
            body = data[body_start:body_end]
            try:
                if op == _OP_SCHEMA:
                    (schema_id,) = struct.unpack_from("<H", body, 0)
                    self.schemas[schema_id] = _mcap_string(body, 2)[0]
                elif op == _OP_CHANNEL:
                    channel_id, schema_id = struct.unpack_from("<HH", body, 0)
                    topic, _ = _mcap_string(body, 4)
                    self.channels[channel_id] = (topic, self.schemas.get(schema_id, ""))
                elif op == _OP_MESSAGE:
                    channel_id, _, log_time, _ = struct.unpack_from("<HIQQ", body, 0)
                    if channel_id in self.channels and (wanted is None or channel_id in wanted):
                        yield channel_id, log_time, body[22:]
            except (struct.error, UnicodeDecodeError) as exc:
                raise BagDamaged(f"{self.path}: corrupt record at byte {pos} ({exc})") from exc
            pos = body_end

    def _chunk(self, data: bytes, start: int, end: int, wanted):
        try:
            _, _, size, crc = struct.unpack_from("<QQQI", data, start)
            compression, pos = _mcap_string(data, start + 28)
            (compressed_size,) = struct.unpack_from("<Q", data, pos)
        except (struct.error, UnicodeDecodeError) as exc:
            raise BagDamaged(f"{self.path}: truncated chunk header at byte {start}") from exc
        records = data[pos + 8:min(pos + 8 + compressed_size, end)]
        cut = len(records) < compressed_size
        if cut and compression:
            raise BagDamaged(f"{self.path}: truncated {compression} chunk at byte {start}")
        if not cut:
            try:
                records = mcap_decompress(records, compression, size, crc)
            except Exception as exc:  # decompressor-specific errors: the chunk is unusable
                raise BagDamaged(f"{self.path}: unreadable chunk at byte {start} "
                                 f"({_reason(exc)})") from exc
        yield from self._records(records, 0, wanted, in_chunk=True, cut=cut)


def _mcap_string(buf, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", buf, pos)
    raw = bytes(buf[pos + 4:pos + 4 + length])
    if len(raw) != length:
        raise struct.error("string runs past the record")
    return raw.decode(), pos + 4 + length


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _storage_files(folder: Path) -> list[Path]:
    """A bag folder's storage files: from metadata.yaml when it is readable, else by suffix."""
    meta = folder / "metadata.yaml"
    if meta.is_file():
        try:
            info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
            files = [folder / Path(p).name for p in info["relative_file_paths"]]
            if files and all(f.is_file() for f in files):
                return files
        except (yaml.YAMLError, UnicodeDecodeError, KeyError, TypeError, OSError):
            pass
    return sorted(p for p in folder.iterdir() if p.suffix in STORAGE_SUFFIXES and p.is_file())


def _salvage(path: Path):
    if path.suffix == ".db3":
        return _SqliteSalvage(path)
    return _McapSalvage(path)


def open_bag(path: str | Path) -> InputBag:
    """Open a rosbag2 folder, `.mcap` or `.db3` file; salvage mode for damaged storage."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} not found (give a rosbag2 folder, a .mcap or a .db3 file)")
    if path.is_dir():
        files = _storage_files(path)
        if not files:
            raise BagError(f"{path}: not a rosbag2 bag (no metadata.yaml and no .mcap or .db3 "
                           "file in the folder)")
        use_reader = (path / "metadata.yaml").is_file()
    else:
        if path.suffix not in STORAGE_SUFFIXES:
            raise BagError(f"{path}: not a rosbag2 bag (expected a folder, a .mcap or a .db3 "
                           f"file; got suffix {path.suffix!r})")
        files = [path]
        use_reader = True
    storage = STORAGE_SUFFIXES.get(files[0].suffix, "mcap")
    # A folder without metadata.yaml: its recording stopped before the file was written.
    sources = []
    try:
        for source_path in [path] if use_reader else files:
            sources.append(_RosbagsSource(source_path))
        return InputBag(path, storage, sources)
    except (ReaderError, OSError, KeyError, ValueError, BagError) as exc:
        for source in sources:
            source.close()
        if isinstance(exc, BagError):
            raise
        error = _reason(exc)
    sources = []
    try:
        for f in files:
            sources.append(_salvage(f))
    except (sqlite3.Error, OSError, BagError) as exc:
        for source in sources:
            source.close()
        raise BagError(f"cannot read bag {path}: {error}; salvaging {f.name} failed too "
                       f"({_reason(exc)})") from exc
    found = next((s.damage for s in sources if getattr(s, "damage", None)), None)
    bag = InputBag(path, storage, sources, damage=found or f"index unreadable ({error})")
    if not bag.topics:
        bag.close()
        raise BagError(f"cannot read bag {path}: {error} (no topic could be salvaged)")
    return bag


# --- output ------------------------------------------------------------------------------


@dataclass
class OutputBag:
    """A rosbag2 folder being written: topics are added on their first message."""

    path: Path
    storage: str = "mcap"
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        if self.storage not in OUTPUT_STORAGES:
            raise BagError(f"output storage {self.storage!r} is not one of "
                           f"{', '.join(OUTPUT_STORAGES)}")
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        try:
            self._writer = Writer(self.path, version=8, storage_plugin=plugin)
            self._writer.open()
        except WriterError as exc:
            raise BagError(f"cannot write bag {self.path}: {_reason(exc)}") from exc
        self._connections = {}

    def write(self, topic: str, timestamp: int, msg) -> None:
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msg.__msgtype__, typestore=TYPESTORE,
                                               offered_qos_profiles=node_offered_qos(topic))
            self._connections[topic] = conn
            self.counts[topic] = 0
        self._writer.write(conn, int(timestamp), serialize(msg))
        self.counts[topic] += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> OutputBag:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def node_offered_qos(topic: str) -> tuple[Qos, ...]:
    """The QoS the node's publisher on `topic` offers (ros/node.py OUTPUT_QOS and
    LATCHED_QOS): reliable, keep last 1, volatile; transient local for ~/label_info.
    Recorded in the output bag so that `ros2 bag play` offers the same: it replays a topic
    with the QoS recorded for it, and a late subscriber then behaves as with the node."""
    unset = QosTime(sec=0, nsec=0)  # rclpy's default: no deadline, lifespan or lease
    durability = (QosDurability.TRANSIENT_LOCAL if topic.endswith("/label_info")
                  else QosDurability.VOLATILE)
    return (Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
                durability=durability, deadline=unset, lifespan=unset,
                liveliness=QosLiveliness.SYSTEM_DEFAULT, liveliness_lease_duration=unset,
                avoid_ros_namespace_conventions=False),)
