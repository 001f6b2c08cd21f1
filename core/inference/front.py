"""What the FlagEmbedding-compatible classes (FlagModel, FlagReranker, BGEM3FlagModel and their subclasses) share:
the model's name and folder, its settings object, the devices, the runtime, close and repr.

A front object holds one immutable settings object (:mod:`.settings`); its settings read as attributes
(``model.batch_size``), and assigning one (``model.batch_size = 32``, as FlagEmbedding users do) replaces the
settings object with a checked copy, so what a call reads is always what the object says.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from .batching import tokenize_texts
from .devices import resolve_devices
from .inputs import as_text_list, check_positive_int
from .kinds import DEFAULT_MAX_LENGTH
from .model_files import resolve_model_path
from .runtime import Runtime
from .settings import ModelSettings, load_settings

_ASSIGN = threading.Lock()  # one settings replacement at a time (two threads assigning lose neither value)

SettingsT = TypeVar("SettingsT", bound=ModelSettings)
FrontT = TypeVar("FrontT", bound="ModelFront[Any]")


class ModelFront(Generic[SettingsT]):
    """The base of the FlagEmbedding-compatible classes: ``settings`` (the kind's settings object), ``path`` (the
    local folder), ``target_devices``, ``runtime``, ``stop_self_pool`` / ``close`` and ``repr``."""

    settings_class: ClassVar[type[ModelSettings]]
    # constructor arguments that are not settings (FlagModel's convert_to_numpy, BGE-M3's return_* flags): name ->
    # default (the constructor's signature reads its default from here); they are kept as plain attributes
    options: ClassVar[dict[str, Any]] = {}
    # what a setting left as None means for this class when the settings object comes from elsewhere (an adapter,
    # where None means "the class's own"); FlagEmbedding's constructors say it with their defaults, which they read
    # from here (every other default of theirs is the settings class's: settings.setting_defaults)
    none_means: ClassVar[dict[str, Any]] = {}
    # settings of the kind that this class's constructor does not take (they come only in a settings object)
    not_in_constructor: ClassVar[tuple[str, ...]] = ()
    # what each of those settings is, for the error when a settings object sets one (e.g. "an LLM-Embedder setting")
    setting_reasons: ClassVar[dict[str, str]] = {}

    settings: SettingsT
    runtime: Runtime[Any, Any, Any]

    def _start(self, model_name_or_path: str | os.PathLike[str], keywords: dict[str, Any]) -> None:
        """Build the settings object from a constructor's ``keywords`` (its ``locals()``, or keyword arguments),
        refusing a name that is neither a setting nor an option, and find the model's folder and devices."""
        keywords = dict(keywords)
        extra = keywords.pop("kwargs", None) or {}  # a constructor's **kwargs
        twice = sorted(set(extra) & set(keywords))
        if twice:
            raise TypeError(f"{type(self).__name__}() got multiple values for {twice}")
        keywords.update(extra)
        cls = type(self)
        fields, options = cls.settings_class.model_fields, cls.options
        unknown = sorted((set(keywords) - set(fields) - set(options) - {"self", "model_name_or_path", "__class__"})
                         | (set(keywords) & set(cls.not_in_constructor)))
        if unknown:
            raise TypeError(f"{cls.__name__}() got unexpected keyword arguments {unknown}")
        # a setting this constructor has no parameter for (a subclass's **kwargs left it out) means what
        # none_means says, as the constructor it forwards to would have given it
        values = {name: keywords[name] if name in keywords else cls.none_means[name]
                  for name in fields if name in keywords or name in cls.none_means}
        settings = cls.settings_class.checked(values)
        self._begin(model_name_or_path, settings, {name: keywords.get(name, value) for name, value in options.items()})

    def _begin(self, model_name_or_path: str | os.PathLike[str], settings: ModelSettings,
               options: dict[str, Any]) -> None:
        self.__dict__["settings"] = settings
        self.__dict__.update(options)
        self.model_name_or_path = os.fspath(model_name_or_path)
        self.path: Path = resolve_model_path(model_name_or_path, settings.cache_dir)
        self.target_devices = resolve_devices(settings.devices)

    def _setup(self) -> None:
        """Build the runtime (and whatever else the class holds) from ``self.settings``."""
        raise NotImplementedError

    @classmethod
    def from_settings(cls: type[FrontT], model_name_or_path: str | os.PathLike[str], settings: ModelSettings,
                      **options: Any) -> FrontT:
        """The model for ``model_name_or_path`` with a settings object made elsewhere (an adapter, the CLI, a
        worker); a setting left as None takes the class's own meaning (:attr:`none_means`)."""
        if not isinstance(settings, cls.settings_class):
            raise TypeError(f"{cls.__name__} takes {cls.settings_class.__name__}, got {type(settings).__name__}")
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            raise TypeError(f"{cls.__name__}.from_settings() got unexpected options {unknown}")
        for name in cls.not_in_constructor:  # a setting this class has no use for is refused, never ignored
            value = getattr(settings, name)
            if value != type(settings).model_fields[name].default and not cls.takes(name, value):
                raise TypeError(f"{name}={value!r} is {cls.setting_reasons.get(name, 'not a setting')} of "
                                f"{cls.__name__}; {model_name_or_path} is not run by it")
        filled = {name: value for name, value in cls.none_means.items() if getattr(settings, name) is None}
        model = cls.__new__(cls)
        model._begin(model_name_or_path, settings.model_copy(update=filled) if filled else settings,
                     {**cls.options, **options})
        model._setup()
        return model

    @classmethod
    def takes(cls, name: str, value: Any) -> bool:
        """Whether a settings object may set ``name`` (one of :attr:`not_in_constructor`) to ``value`` for this
        class (a reranker's model_class naming this class's kind)."""
        return False

    def __getattr__(self, name: str) -> Any:
        settings = self.__dict__.get("settings")
        if settings is not None and name in type(settings).model_fields:
            return getattr(settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        settings = self.__dict__.get("settings")
        if settings is None or name not in type(settings).model_fields:
            super().__setattr__(name, value)
            return
        if name in load_settings(type(settings)) and "runtime" in self.__dict__:
            raise AttributeError(f"{name} decides how the model is loaded, so it is fixed for a loaded model; build "
                                 f"another one: {type(self).__name__}(..., {name}={value!r})")
        with _ASSIGN:  # the next call reads the new value; a call already running keeps the one it started with
            settings = self.__dict__["settings"]
            settings = type(settings).checked({**dict(settings), name: value})
            self.__dict__["settings"] = settings
            if "runtime" in self.__dict__:
                self.runtime.settings = settings

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (a transformers tokenizer), as FlagEmbedding's classes have it. It is the one the model
        runs with: a fast tokenizer keeps its truncation setting between calls, so calling it while another thread
        encodes can change how that call cuts its texts; :meth:`count_tokens` and :meth:`side_tokenizer` are safe."""
        return self.runtime.loaded.tokenizer

    def count_tokens(self, texts: str | Sequence[str], max_length: int | None = None) -> list[int]:
        """How many tokens the model reads of each text (special tokens included, at most ``max_length``; None: the
        passage length of an embedder, the pair length of a reranker)."""
        counts = self._count_tokens(texts, max_length, wait=True)
        assert counts is not None  # (waiting for the side tokenizer always gets it)
        return counts

    def count_tokens_now(self, texts: str | Sequence[str], max_length: int | None = None) -> list[int] | None:
        """:meth:`count_tokens`, or None at once while another thread uses the side tokenizer (for an event loop,
        which must not wait for a lock)."""
        return self._count_tokens(texts, max_length, wait=False)

    def _count_tokens(self, texts: str | Sequence[str], max_length: int | None, wait: bool) -> list[int] | None:
        items, _single = as_text_list(texts, "texts")
        if max_length is None:
            settings = self.settings
            max_length = getattr(settings, "passage_max_length", None) or getattr(settings, "max_length", None) \
                or self.runtime.max_length or DEFAULT_MAX_LENGTH
        limit = check_positive_int(max_length, "max_length", allow_none=False)
        with self.side_tokenizer(wait=wait) as tokenizer:
            if tokenizer is None:
                return None
            ids, _cut = tokenize_texts(tokenizer, items, limit)
        return [len(row) for row in ids]

    @contextlib.contextmanager
    def side_tokenizer(self, wait: bool = True) -> Iterator[Any]:
        """A copy of the model's tokenizer for tokenizing beside the model's runs (token counts, length checks, a
        server's /tokenize), one user at a time: a fast tokenizer keeps its truncation setting on the object, so
        using the model's own while a batch is tokenized in another thread could cut that batch to another length.
        With ``wait`` False it gives None at once while another thread uses it (an event loop must not wait)."""
        with _ASSIGN:
            side = self.__dict__.get("_side_tokenizer")
            if side is None:
                side = (copy.deepcopy(self.runtime.loaded.tokenizer), threading.Lock())
                self.__dict__["_side_tokenizer"] = side
        if not side[1].acquire(blocking=wait):
            yield None
            return
        try:
            yield side[0]
        finally:
            side[1].release()

    def stop_self_pool(self) -> None:
        """Stop worker processes (several devices); FlagEmbedding's name for it."""
        self.runtime.close()

    def close(self) -> None:
        """Stop worker processes (several devices)."""
        self.runtime.close()

    def describe(self) -> dict[str, Any]:
        """What ``repr`` shows besides the model name."""
        return {"devices": self.target_devices}

    def __repr__(self) -> str:
        details = "".join(f", {name}={value!r}" for name, value in self.describe().items())
        return f"{type(self).__name__}({self.model_name_or_path!r}{details})"
