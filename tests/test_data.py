import torch

from rasft_trl.data import Trajectory, assemble_pools, collate_trajectories, gather_rows, scatter_rows


def test_collate_masks_from_positions_even_when_pad_equals_eos():
    eos = 7
    trajs = [Trajectory([1, 2], [3, eos], 0, True), Trajectory([4], [5, 6, eos], 1, True)]
    batch = collate_trajectories(trajs, pad_token_id=eos)
    assert batch["input_ids"].tolist() == [[1, 2, 3, eos], [4, 5, 6, eos]]
    assert batch["labels"].tolist() == [[-100, -100, 3, eos], [-100, 5, 6, eos]]
    # completion_mask is aligned with labels[:, 1:]
    assert batch["completion_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    short = collate_trajectories([Trajectory([1], [eos], 0, True), trajs[1]], pad_token_id=eos)
    assert short["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert short["completion_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]


def test_scatter_gather_roundtrip():
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    rows = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0, 5.0])]
    dense = scatter_rows(rows, mask)
    assert dense.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert [r.tolist() for r in gather_rows(dense, mask)] == [[1.0, 2.0], [3.0, 4.0, 5.0]]


def test_assemble_pools_expert_first_with_solvability():
    experts = [Trajectory([1], [2], 0, True, example_index=10), Trajectory([3], [4], 1, True, example_index=11)]
    pools = assemble_pools(experts, {0: [[5], [6]]}, {0: 2 / 3, 1: 0.0})
    assert [len(p) for p in pools] == [3, 1]
    assert pools[0][0].is_expert and not pools[0][1].is_expert
    assert pools[0][1].completion_ids == [5] and pools[0][1].prompt_ids == [1]
    assert all(t.solvability == 2 / 3 and t.group_id == 0 for t in pools[0])
