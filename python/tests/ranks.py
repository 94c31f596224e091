"""Runs a function on several ranks, each a forked or spawned process with
its own communicator, and brings their results (or their errors) back to
the test."""

import multiprocessing
import os
import pickle
import traceback
import uuid

import tpcoll


class RankFailed(AssertionError):
    pass


def socket_communicator(rank, world, job):
    return tpcoll.Communicator(rank, world, job_id=job)


def _rank_main(conn, make_comm, fn, rank, world, job, args):
    try:
        with make_comm(rank, world, job) as comm:
            result = (True, fn(comm, *args))
    except BaseException as e:  # noqa: B036 - everything must reach the test
        result = (False, f"rank {rank}: {type(e).__name__}: {e}\n{traceback.format_exc()}")
    # Plain pickle: multiprocessing's own would send torch tensors as shared
    # memory handles, which die with this process.
    conn.send_bytes(pickle.dumps(result))


def run_ranks(world, fn, *args, make_comm=socket_communicator, start="fork", timeout=60):
    """fn(comm, *args) on every rank, comm from make_comm(rank, world, job)
    (a context manager); returns fn's results in rank order. Ranks are forked
    (quick: nothing is imported again) unless start="spawn", which torch needs
    once the parent has asked about CUDA (even torch.cuda.is_available());
    then fn and make_comm must be picklable: module-level functions, or
    partials of them. Results travel back through pipes."""
    context = multiprocessing.get_context(start)
    job = f"pytest-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    ranks = []
    for rank in range(world):
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_rank_main, args=(send, make_comm, fn, rank, world, job, args))
        process.start()
        send.close()
        ranks.append((process, receive))
    results, failures = [], []
    try:
        for rank, (process, receive) in enumerate(ranks):
            if not receive.poll(timeout):
                failures.append(f"rank {rank}: no result within {timeout} s")
                break
            ok, value = pickle.loads(receive.recv_bytes())
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
