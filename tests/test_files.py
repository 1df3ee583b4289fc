"""Atomic writes and the write check, when several processes share one folder (``octlens tune``'s
workers share their ``--out``)."""

from __future__ import annotations

import threading

from octlens.files import require_writable_folder, write_text


def _race(target, rounds: int = 300, threads: int = 6) -> list[BaseException]:
    """Run ``target()`` ``rounds`` times in each of ``threads`` threads at once; the errors."""
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()
        for _ in range(rounds):
            try:
                target()
            except BaseException as error:  # every failure is collected for the assertion
                errors.append(error)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return errors


def test_writers_checking_one_folder_at_once_do_not_trip_over_each_other(tmp_path):
    folder = tmp_path / "shared"
    assert _race(lambda: require_writable_folder(folder)) == []
    assert list(folder.iterdir()) == []  # no probe left behind


def test_writers_replacing_one_file_at_once_leave_one_whole_file(tmp_path):
    target = tmp_path / "best_config.json"
    texts = [f"{n}" * 1000 for n in range(6)]
    counter = iter(range(10**9))
    assert _race(lambda: write_text(target, texts[next(counter) % 6])) == []
    assert target.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary left behind
