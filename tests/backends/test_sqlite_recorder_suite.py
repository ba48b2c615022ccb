"""eventsourcing's own recorder test suite, run against snaptail's SQLite recorder.

Includes ``optional_test_insert_subscribe``: the subscription snaptail adds to SQLite.
The module is imported (not its class names) so pytest does not collect the bases.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from eventsourcing.sqlite import SQLiteDatastore
from eventsourcing.tests import persistence

from snaptail.infrastructure.sqlite import SQLiteAgentRecorder


class TestSQLiteAgentRecorderSuite(persistence.ApplicationRecorderTestCase[SQLiteAgentRecorder]):
    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="snaptail-suite-"))
        self.count = 0

    def tearDown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def create_recorder(self) -> SQLiteAgentRecorder:
        self.count += 1
        datastore = SQLiteDatastore(str(self.tmp / f"events-{self.count}.db"), lock_timeout=30)
        recorder = SQLiteAgentRecorder(datastore)
        recorder.create_table()
        return recorder

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()
