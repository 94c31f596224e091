"""Runs a function on several ranks, each a forked process with its own
communicator, and brings their results (or their errors) back to the test."""

import multiprocessing
import os
import traceback
import uuid

import tpcoll

_fork = multiprocessing.get_context("fork")  # no re-import per rank: tests stay quick


class RankFailed(AssertionError):
    pass


def _rank_main(conn, fn, rank, world, job, args):
    try:
        with tpcoll.Communicator(rank, world, job_id=job) as comm:
            conn.send((True, fn(comm, *args)))
    except BaseException as e:  # noqa: B036 - everything must reach the test
        conn.send((False, f"rank {rank}: {type(e).__name__}: {e}\n{traceback.format_exc()}"))


def run_ranks(world, fn, *args, timeout=60):
    """fn(comm, *args) on every rank; returns the results in rank order.
    fn must be a module-level function (the ranks are forked: no pickling of
    fn, but its results travel back through a pipe)."""
    job = f"pytest-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    ranks = []
    for rank in range(world):
        receive, send = _fork.Pipe(duplex=False)
        process = _fork.Process(target=_rank_main, args=(send, fn, rank, world, job, args))
        process.start()
        send.close()
        ranks.append((process, receive))
    results, failures = [], []
    try:
        for rank, (process, receive) in enumerate(ranks):
            if not receive.poll(timeout):
                failures.append(f"rank {rank}: no result within {timeout} s")
                break
            ok, value = receive.recv()
            (results if ok else failures).append(value)
    finally:
        for process, _ in ranks:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
    if failures:
        raise RankFailed("\n".join(failures))
    return results
