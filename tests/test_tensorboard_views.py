"""What the TensorBoard views are made of: the latent readout, the single projector embedding and
the labelled rollout image (the end-to-end check of the tabs is in test_dyna_cli.py)."""

from __future__ import annotations

import torch

from callbacks.task_latent_logger import linear_readout, r_squared, readout_figure, write_projector
from envs import make_family
from evaluation import rollout_strip
from modules.policies.actor_critic import ActorCritic


def test_the_readout_recovers_a_parameter_the_latent_encodes_linearly():
    family = make_family("acrobot")
    tasks = family.train_tasks(12, seed=0) + family.test_tasks()
    values = torch.tensor([t.parameters["link1_mass"] for t in tasks])
    means = torch.stack([2 * values - 1, torch.randn(len(tasks))], dim=1)  # z_0 carries the mass, z_1 is noise
    train = torch.tensor([t.split == "train" for t in tasks])
    pred = linear_readout(means, values, train)
    assert r_squared(pred[~train], values[~train]) > 0.99
    assert r_squared(torch.full_like(values, float(values.mean())), values) == 0.0
    fig = readout_figure(tasks, means, family.param_names)
    assert round(fig.get_size_inches()[0] * fig.dpi) == 340  # the image card's width, unscaled
    assert "link1_mass: R² train 1.00, interp 1.00" in [ax.get_title() for ax in fig.axes]


def test_the_projector_keeps_one_embedding_rewritten_in_place(tmp_path):
    family = make_family("cartpole_swingup")
    tasks = family.test_tasks()
    for step in (2, 5):
        write_projector(tmp_path, torch.randn(len(tasks), 3), tasks, family.param_names, f"model/latent (step {step})")
    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == 1 and "(step 5)" in config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["projector", "projector_config.pbtxt"]
    rows = (tmp_path / "projector/metadata.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["task", "split", *family.param_names] and len(rows) == 1 + len(tasks)


def test_the_rollout_image_fits_the_card_and_has_a_caption_under_each_frame():
    family = make_family("cartpole_swingup")
    task = family.test_tasks()[0]
    policy = ActorCritic(family.obs_dim, 2, family.act_dim, hidden_dim=8)
    image = rollout_strip(family, task, policy, torch.zeros(2))
    rows, title, caption = 3, 24, 34  # six frames, two a row
    assert image.shape[1] == 340 and image.shape[2] == 3
    row = (image.shape[0] - title) // rows
    assert image.shape[0] == title + rows * row and row > caption  # the title, then three rows of frames
    assert (image[:title] < 128).any(), "the title is drawn"
    for r in range(rows):
        band = image[title + (r + 1) * row - caption : title + (r + 1) * row]  # under the frames of row r
        for half in (band[:, :170], band[:, 170:]):
            assert (half == 255).mean() > 0.5 and (half < 128).any(), f"row {r}: a caption under each frame"
