"""Message id registry: which protobuf class travels under which 16-bit id.

Ids are declared in proto/*.proto with ``option (rl.msgid) = N;`` on each
top-level request (a message with a nested ``Response``) and push
(``XxxNotify``). A response travels under its request's id, so ``id_of``
maps both ``Login`` and ``Login.Response`` to 1. The registry is built once at
import from the generated modules and refuses duplicate or out-of-range ids,
so a bad .proto edit fails at start-up instead of mis-routing frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Final

import attrs
from google.protobuf.message import Message

from rltwist.protocols import pb
from rltwist.protocols.pb import options_pb2

MAX_MESSAGE_ID: Final = 0xFFFF
PUSH_SUFFIX: Final = "Notify"


class UnknownMessage(LookupError):
    """A message id or class that the registry does not know."""


@attrs.frozen
class MessageInfo:
    """One registered id: a request with its response class, or a push."""

    id: int
    cls: type[Message]
    response_cls: type[Message] | None

    @property
    def is_push(self) -> bool:
        return self.response_cls is None

    @property
    def name(self) -> str:
        return self.cls.DESCRIPTOR.full_name


def declared_id(cls: type[Message]) -> int | None:
    """The ``(rl.msgid)`` option declared on ``cls`` in its .proto, or None."""
    options = cls.DESCRIPTOR.GetOptions()
    # protoc's generated options_pb2.pyi types the extension as a plain FieldDescriptor;
    # types-protobuf wants its (stub-only) _ExtensionFieldDescriptor here
    if not options.HasExtension(options_pb2.msgid):  # type: ignore[arg-type]
        return None
    return int(options.Extensions[options_pb2.msgid])  # type: ignore[index]


def _classify(msg_id: int, cls: type[Message]) -> MessageInfo:
    name = cls.DESCRIPTOR.full_name
    if not 1 <= msg_id <= MAX_MESSAGE_ID:
        raise ValueError(f"{name}: message id {msg_id} is outside 1..{MAX_MESSAGE_ID}")
    response = getattr(cls, "Response", None)
    if name.endswith(PUSH_SUFFIX):
        if response is not None:
            raise ValueError(f"{name}: a push (…{PUSH_SUFFIX}) cannot have a Response")
        return MessageInfo(msg_id, cls, None)
    if response is None:
        raise ValueError(
            f"{name}: id {msg_id} but neither a request (nested Response) "
            f"nor a push (name ending in {PUSH_SUFFIX})"
        )
    return MessageInfo(msg_id, cls, response)


class Registry:
    """Bidirectional map between message ids and protobuf classes.

    The plain dicts (``requests``, ``responses``, ``pushes`` keyed by id and
    ``request_ids``, ``response_ids``, ``push_ids`` keyed by class) are the
    hot-path tables the protocols read directly; treat them as read-only.
    """

    def __init__(self, entries: Iterable[tuple[int, type[Message]]]) -> None:
        self._infos: dict[int, MessageInfo] = {}
        self.requests: dict[int, type[Message]] = {}
        self.responses: dict[int, type[Message]] = {}
        self.pushes: dict[int, type[Message]] = {}
        self.request_ids: dict[type[Message], int] = {}
        self.response_ids: dict[type[Message], int] = {}
        self.push_ids: dict[type[Message], int] = {}
        self._ids: dict[type[Message], int] = {}
        for msg_id, cls in entries:
            info = _classify(msg_id, cls)
            other = self._infos.get(msg_id)
            if other is not None:
                raise ValueError(f"message id {msg_id} is declared by both {other.name} "
                                 f"and {info.name}")
            if cls in self._ids:
                raise ValueError(f"{info.name} is registered twice")
            self._infos[msg_id] = info
            if info.response_cls is None:
                self.pushes[msg_id] = cls
                self.push_ids[cls] = msg_id
            else:
                self.requests[msg_id] = cls
                self.request_ids[cls] = msg_id
                self.responses[msg_id] = info.response_cls
                self.response_ids[info.response_cls] = msg_id
                self._ids[info.response_cls] = msg_id
            self._ids[cls] = msg_id

    @classmethod
    def from_modules(cls, modules: Iterable[ModuleType]) -> Registry:
        """Collect every top-level message with a ``(rl.msgid)`` option.

        A top-level message that looks like a request or push but declares no
        id is an error: it could be sent but never routed.
        """
        entries: list[tuple[int, type[Message]]] = []
        for module in modules:
            for name in module.DESCRIPTOR.message_types_by_name:
                msg_cls: type[Message] = getattr(module, name)
                msg_id = declared_id(msg_cls)
                if msg_id is not None:
                    entries.append((msg_id, msg_cls))
                elif name.endswith(PUSH_SUFFIX) or hasattr(msg_cls, "Response"):
                    raise ValueError(f"{msg_cls.DESCRIPTOR.full_name} has no (rl.msgid) option")
        return cls(entries)

    def id_of(self, message: Message | type[Message]) -> int:
        """Wire id of a request, response or push (class or instance)."""
        cls = message if isinstance(message, type) else type(message)
        try:
            return self._ids[cls]
        except KeyError:
            raise UnknownMessage(f"{cls.__qualname__} has no message id") from None

    def info(self, msg_id: int) -> MessageInfo:
        try:
            return self._infos[msg_id]
        except KeyError:
            raise UnknownMessage(f"unknown message id {msg_id}") from None

    def class_of(self, msg_id: int) -> type[Message]:
        """The request or push class sent under ``msg_id``."""
        return self.info(msg_id).cls

    def response_class_of(self, msg_id: int) -> type[Message]:
        """The response class answering the request ``msg_id``."""
        response = self.info(msg_id).response_cls
        if response is None:
            raise UnknownMessage(f"message id {msg_id} is a push and has no response")
        return response

    def __iter__(self) -> Iterator[MessageInfo]:
        """All entries in id order."""
        return iter(sorted(self._infos.values(), key=lambda info: info.id))

    def __len__(self) -> int:
        return len(self._infos)

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._infos


REGISTRY: Final = Registry.from_modules(pb.MODULES)

id_of = REGISTRY.id_of
class_of = REGISTRY.class_of
response_class_of = REGISTRY.response_class_of
