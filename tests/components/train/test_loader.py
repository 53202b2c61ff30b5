"""The batches each training process reads in an epoch, from the decoded cache and from packed shards."""

import numpy as np
from hypothesis import assume, given, settings, strategies as st

from components.imaging import Preprocessing
from components.train.loader import ShardSource, Split, epoch_batches, global_batch_sizes, rank_share, shared_batches

PREP = Preprocessing(8, 8, 1, "stretch", (0.5,), (0.5,), 10_000)


def _shards(sizes: list[int]) -> tuple[ShardSource, Split]:
    """A shard source over a training split packed into shards of ``sizes`` images (nothing is read: the plan
    needs only the index), and that split."""
    rows = np.arange(sum(sizes))
    bounds = np.cumsum([0, *sizes])
    record = {"url": "unused", "splits": {"train": [{"name": f"train-{i:06d}.tar", "rows": rows[a:b].tolist()}
                                                    for i, (a, b) in enumerate(zip(bounds, bounds[1:]))],
                                          "val": [], "test": []}}
    return ShardSource(PREP, record, reader=None), Split(rows, np.zeros(len(rows), np.int64))


plans = st.fixed_dictionaries({
    "sizes": st.lists(st.integers(1, 40), min_size=1, max_size=12),
    "batch_size": st.integers(1, 32),
    "seed": st.integers(0, 2**16),
    "epoch": st.integers(0, 50),
})


@settings(max_examples=200, deadline=None)
@given(plans, st.integers(1, 4))
def test_from_shards_each_rank_reads_only_its_own_shards_and_takes_its_share_of_every_global_batch(plan, ranks):
    sizes = plan["sizes"]
    # the data step packs one shard per process at least; a global batch holds one image per rank
    assume(len(sizes) >= ranks and plan["batch_size"] >= ranks)
    source, split = _shards(sizes)
    shard_of = np.repeat(np.arange(len(sizes)), sizes)
    per_rank = [epoch_batches(source, split, plan["batch_size"], plan["seed"], plan["epoch"], rank, ranks)
                for rank in range(ranks)]
    global_sizes = global_batch_sizes(len(split), plan["batch_size"], ranks)
    read_by = {}
    for rank, batches in enumerate(per_rank):
        assert len(batches) == len(global_sizes)  # every rank takes as many optimizer steps
        assert [len(b) for b in batches] == [len(rank_share(np.arange(n), rank, ranks)) for n in global_sizes]
        for shard in set(shard_of[np.concatenate(batches)].tolist()):
            assert read_by.setdefault(shard, rank) == rank, "two ranks read one shard"
    if ranks == 1:  # one process sees each image once an epoch, a shard at a time
        order = np.concatenate(per_rank[0])
        assert sorted(order.tolist()) == list(range(len(split)))
        assert np.count_nonzero(np.diff(shard_of[order])) == len(sizes) - 1


@settings(max_examples=50, deadline=None)
@given(plans)
def test_an_epochs_plan_depends_only_on_seed_and_epoch_so_a_resume_repeats_it(plan):
    source, split = _shards(plan["sizes"])
    args = (source, split, plan["batch_size"], plan["seed"])
    first, again = epoch_batches(*args, plan["epoch"]), epoch_batches(*args, plan["epoch"])
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_shards_are_shuffled_between_epochs_and_within_themselves():
    source, split = _shards([30] * 8)
    orders = [np.concatenate(epoch_batches(source, split, 16, seed=0, epoch=epoch)) for epoch in range(2)]
    assert not np.array_equal(orders[0], orders[1])
    first_shard = orders[0][:30]
    assert not np.array_equal(np.sort(first_shard), first_shard)  # shuffled within the shard


def test_from_the_decoded_cache_ranks_split_the_global_batches_of_one_process():
    split = Split(np.arange(100), np.zeros(100, np.int64))
    one = epoch_batches(None, split, 16, seed=3, epoch=1)
    two = [epoch_batches(None, split, 16, 3, 1, rank, 2) for rank in range(2)]
    assert [np.concatenate(pair).tolist() for pair in zip(*two)] == [b.tolist() for b in one]
    assert [len(b) for b in one] == [len(b) for b in shared_batches(np.arange(100), 16, 1)]
