from . import errors_pb2 as _errors_pb2
from . import options_pb2 as _options_pb2
from . import player_pb2 as _player_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MailSummary(_message.Message):
    __slots__ = ("mail_id", "from_userid", "from_name", "title", "time_ms", "expire_ms", "read", "has_attachments", "claimed")
    MAIL_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_USERID_FIELD_NUMBER: _ClassVar[int]
    FROM_NAME_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_MS_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    HAS_ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_FIELD_NUMBER: _ClassVar[int]
    mail_id: int
    from_userid: int
    from_name: str
    title: str
    time_ms: int
    expire_ms: int
    read: bool
    has_attachments: bool
    claimed: bool
    def __init__(self, mail_id: _Optional[int] = ..., from_userid: _Optional[int] = ..., from_name: _Optional[str] = ..., title: _Optional[str] = ..., time_ms: _Optional[int] = ..., expire_ms: _Optional[int] = ..., read: _Optional[bool] = ..., has_attachments: _Optional[bool] = ..., claimed: _Optional[bool] = ...) -> None: ...

class Mail(_message.Message):
    __slots__ = ("summary", "body", "attachments")
    class AttachmentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    summary: MailSummary
    body: str
    attachments: _containers.ScalarMap[str, int]
    def __init__(self, summary: _Optional[_Union[MailSummary, _Mapping]] = ..., body: _Optional[str] = ..., attachments: _Optional[_Mapping[str, int]] = ...) -> None: ...

class MailList(_message.Message):
    __slots__ = ()
    class Response(_message.Message):
        __slots__ = ("code", "mails")
        CODE_FIELD_NUMBER: _ClassVar[int]
        MAILS_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        mails: _containers.RepeatedCompositeFieldContainer[MailSummary]
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., mails: _Optional[_Iterable[_Union[MailSummary, _Mapping]]] = ...) -> None: ...
    def __init__(self) -> None: ...

class MailRead(_message.Message):
    __slots__ = ("mail_id",)
    class Response(_message.Message):
        __slots__ = ("code", "mail")
        CODE_FIELD_NUMBER: _ClassVar[int]
        MAIL_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        mail: Mail
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., mail: _Optional[_Union[Mail, _Mapping]] = ...) -> None: ...
    MAIL_ID_FIELD_NUMBER: _ClassVar[int]
    mail_id: int
    def __init__(self, mail_id: _Optional[int] = ...) -> None: ...

class MailDelete(_message.Message):
    __slots__ = ("mail_id",)
    class Response(_message.Message):
        __slots__ = ("code",)
        CODE_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ...) -> None: ...
    MAIL_ID_FIELD_NUMBER: _ClassVar[int]
    mail_id: int
    def __init__(self, mail_id: _Optional[int] = ...) -> None: ...

class MailSend(_message.Message):
    __slots__ = ("to_userid", "title", "body")
    class Response(_message.Message):
        __slots__ = ("code",)
        CODE_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ...) -> None: ...
    TO_USERID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    to_userid: int
    title: str
    body: str
    def __init__(self, to_userid: _Optional[int] = ..., title: _Optional[str] = ..., body: _Optional[str] = ...) -> None: ...

class MailClaim(_message.Message):
    __slots__ = ("mail_id",)
    class Response(_message.Message):
        __slots__ = ("code", "attachments", "basics")
        class AttachmentsEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: int
            def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
        CODE_FIELD_NUMBER: _ClassVar[int]
        ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
        BASICS_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        attachments: _containers.ScalarMap[str, int]
        basics: _player_pb2.PlayerBasics
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., attachments: _Optional[_Mapping[str, int]] = ..., basics: _Optional[_Union[_player_pb2.PlayerBasics, _Mapping]] = ...) -> None: ...
    MAIL_ID_FIELD_NUMBER: _ClassVar[int]
    mail_id: int
    def __init__(self, mail_id: _Optional[int] = ...) -> None: ...

class GiftSend(_message.Message):
    __slots__ = ("to_userid", "items")
    class ItemsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class Response(_message.Message):
        __slots__ = ("code", "basics")
        CODE_FIELD_NUMBER: _ClassVar[int]
        BASICS_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        basics: _player_pb2.PlayerBasics
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., basics: _Optional[_Union[_player_pb2.PlayerBasics, _Mapping]] = ...) -> None: ...
    TO_USERID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    to_userid: int
    items: _containers.ScalarMap[str, int]
    def __init__(self, to_userid: _Optional[int] = ..., items: _Optional[_Mapping[str, int]] = ...) -> None: ...

class MailNotify(_message.Message):
    __slots__ = ("mail",)
    MAIL_FIELD_NUMBER: _ClassVar[int]
    mail: MailSummary
    def __init__(self, mail: _Optional[_Union[MailSummary, _Mapping]] = ...) -> None: ...
