"""Forgetting a person: per-subject encryption of agents' payloads and crypto-shredding.

An agent with data subjects (``store.add_subject(agent, "user-42")``) has its event
payloads and snapshot states encrypted with its own data key (AES-256-GCM), held in
a key store apart from the event database and wrapped by each subject's key in turn;
``store.forget("user-42")`` deletes the subject's key and its agents' data keys, and
their data is unreadable everywhere it was copied. README: "Forgetting a person".
"""

from snaptail.privacy.cipher import PayloadCipher, RedactedEvent, is_sealed
from snaptail.privacy.forget import on_forget, remove_listener
from snaptail.privacy.keys import (
    KEYS_URL_ENV,
    MASTER_KEY_ENV,
    MASTER_KEY_FILE_ENV,
    Erasure,
    KeyStore,
    KeyWrapper,
    LocalMasterKey,
    SQLKeyStore,
    new_master_key,
    open_key_store,
)
from snaptail.privacy.registry import register_cache

__all__ = [
    "KEYS_URL_ENV",
    "MASTER_KEY_ENV",
    "MASTER_KEY_FILE_ENV",
    "Erasure",
    "KeyStore",
    "KeyWrapper",
    "LocalMasterKey",
    "PayloadCipher",
    "RedactedEvent",
    "SQLKeyStore",
    "is_sealed",
    "new_master_key",
    "on_forget",
    "open_key_store",
    "register_cache",
    "remove_listener",
]
