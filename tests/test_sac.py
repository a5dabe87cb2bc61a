"""SAC (DESIGN §3.5): the learner learns a task-dependent toy, uses its code, is reproducible under a
seed and refuses settings outside their ranges; the rung-a trainer keeps each trajectory's task and code together."""

import pytest
import torch

from common.validation import SettingError
from envs import make_family
from modules.methods.gssm_aps.exact_policy_search import physics_code
from modules.methods.gssm_aps.exact_sac_search import ExactSACSearch, start_states
from modules.policies.replay_buffer import ReplayBuffer
from modules.policies.sac import SACLearner, SACSettings
from modules.policies.tanh_gaussian_policy import TanhGaussianPolicy

TINY = {"hidden_dim": 32, "batch_size": 128, "actor_lr": 3e-3, "critic_lr": 3e-3}


def code_bandit(n: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """One-step episodes whose best action is the code ``c ∈ {−0.5, 0.5}``: reward ``−(a − c)²``, random actions."""
    code = (torch.randint(2, (n, 1), generator=generator) - 0.5).float()
    action = torch.rand(n, 1, generator=generator) * 2 - 1
    obs = torch.zeros(n, 1)
    return obs, code, action, -((action - code) ** 2).squeeze(-1), obs, torch.ones(n, dtype=torch.bool)


def trained_bandit_learner(seed: int, updates: int = 300) -> SACLearner:
    sac = SACLearner(obs_dim=1, code_dim=1, act_dim=1, settings=TINY, seed=seed)
    sac.add(*code_bandit(2000, torch.Generator().manual_seed(seed)))
    for _ in range(updates):
        sac.update()
    return sac


def test_sac_learns_a_bandit_whose_best_action_is_its_code():
    sac = trained_bandit_learner(seed=0)
    code = torch.tensor([[-0.5], [0.5]])
    action = sac.policy.act(torch.zeros(2, 1), code, deterministic=True)
    regret = ((action - code) ** 2).mean()
    assert regret < 0.02, action  # a uniform random action's expected regret is 1/3 + 1/4
    assert action[0] < 0 < action[1]  # one amortized policy, told the task by its code


def test_sac_bootstraps_a_point_mass_to_its_goal():
    """``s' = s + 0.2 a`` toward a goal ``±0.5`` given by the code, reward ``−|s' − goal|``, 10-step episodes
    from 0 (a time-limit cut, not a termination): the critic must carry the horizon."""
    g = torch.Generator().manual_seed(0)
    sac = SACLearner(obs_dim=1, code_dim=1, act_dim=1, settings={**TINY, "gamma": 0.9}, seed=0)
    goal = torch.tensor([[-0.5], [0.5]]).repeat(32, 1)
    obs, clock = torch.zeros(64, 1), 0
    for step in range(400):
        action = torch.rand(64, 1, generator=g) * 2 - 1 if step < 20 else sac.policy.act(obs, goal, generator=g)
        nxt = obs + 0.2 * action
        sac.add(obs, goal, action, -(nxt - goal).abs().squeeze(-1), nxt, torch.zeros(64, dtype=torch.bool))
        clock += 1
        obs, clock = (torch.zeros(64, 1), 0) if clock == 10 else (nxt, clock)
        if step >= 20:
            sac.update()
    obs, total = torch.zeros(2, 1), 0.0
    for _ in range(10):
        obs = obs + 0.2 * sac.policy.act(obs, goal[:2], deterministic=True)
        total += float((obs - goal[:2]).abs().mean())
    assert total < 1.5  # standing still costs 5.0 over the 10 steps, acting at random about as much


def test_shapes_and_bounds():
    pi = TanhGaussianPolicy(obs_dim=6, code_dim=3, act_dim=2, hidden_dim=16)
    obs, code = torch.randn(7, 6) * 100, torch.randn(7, 3)
    action, log_prob = pi.sample(obs, code, torch.Generator().manual_seed(0))
    assert action.shape == (7, 2) and log_prob.shape == (7,) and torch.isfinite(log_prob).all()
    assert action.abs().max() <= 1 and pi.act(obs, code, deterministic=True).shape == (7, 2)
    sac = SACLearner(obs_dim=6, code_dim=3, act_dim=2, settings={"batch_size": 5, "hidden_dim": 16})
    sac.add(obs, code, action, torch.zeros(7), obs, torch.zeros(7, dtype=torch.bool))
    assert sac.q_values(sac.critic, obs, code, action).shape == (2, 7)
    assert all(v.shape == () for v in sac.update().values()) and sac.target_entropy == -2.0


def test_the_replay_keeps_the_last_rows_and_refuses_other_fields():
    buf = ReplayBuffer(capacity=3)
    buf.add(x=torch.arange(5.0))  # longer than the capacity: the last 3 stay
    assert len(buf) == 3 and sorted(buf.data["x"].tolist()) == [2.0, 3.0, 4.0]
    buf.add(x=torch.tensor([5.0]))
    assert sorted(buf.data["x"].tolist()) == [3.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="fields"):
        buf.add(y=torch.zeros(1))


def test_the_same_seed_gives_the_same_policy_and_another_seed_another():
    a, b, c = trained_bandit_learner(0, 20), trained_bandit_learner(0, 20), trained_bandit_learner(1, 20)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.policy.net[0].weight, c.policy.net[0].weight)


def test_restarts_from_the_replay_keep_each_trajectory_with_its_task_and_code():
    fam = make_family("acrobot")
    tasks = fam.train_tasks(3, seed=0)
    params = fam.params_tensor(tasks)
    search = ExactSACSearch(fam, params, start_states(fam, tasks, 4, seed=0), envs_per_task=4, episode_length=2,
                            restart_from_replay=1.0, warmup_steps=3, sac={"batch_size": 8, "hidden_dim": 8,
                                                                          "buffer_size": 1000})  # fmt: skip
    search.train(8)
    rows = {k: v[: len(search.learner.replay)] for k, v in search.learner.replay.data.items()}
    assert torch.equal(rows["code"], physics_code(fam, params)[rows["task"]])
    assert not torch.equal(search.task, torch.arange(3).repeat_interleave(4))  # some trajectories changed task
    assert torch.all(rows["discount"] == 0.99)  # acrobot never terminates: the time-limit cuts are bootstrapped


@pytest.mark.parametrize(("make", "message"), [
    (lambda: SACSettings(gamma=0), r"^SACSettings.gamma: 0 — expected a number in \(0, 1\]$"),
    (lambda: SACSettings(tau=float("nan")), r"^SACSettings.tau: nan — expected a number in \(0, 1\]$"),
    (lambda: SACSettings(batch_size=0), r"^SACSettings.batch_size: 0 — expected an integer ≥ 1$"),
    (lambda: SACSettings.of({"lr": 1e-3}), r"^unknown SACSettings field\(s\) \['lr'\]"),
    (lambda: ExactSACSearch(make_family("acrobot"), torch.ones(1, 3), torch.zeros(1, 2, 6), restart_from_replay=2),
     r"^ExactSACSearch.restart_from_replay: 2 — expected a number in \[0, 1\]"),
])  # fmt: skip
def test_a_setting_outside_its_range_is_refused_in_one_line(make, message):
    with pytest.raises((SettingError, ValueError), match=message) as error:
        make()
    assert "\n" not in str(error.value)


def test_n_step_transitions_sum_their_rewards_up_to_the_episode_end():
    fam = make_family("acrobot")
    tasks = fam.train_tasks(2, seed=0)
    search = ExactSACSearch(fam, fam.params_tensor(tasks), start_states(fam, tasks, 4, seed=0), envs_per_task=2,
                            episode_length=4, n_step=3, warmup_steps=8, sac={"buffer_size": 100})  # fmt: skip
    search.train(8)
    rows = {k: v[: len(search.learner.replay)] for k, v in search.learner.replay.data.items()}
    assert len(search.learner.replay) == 6 * 4  # the last 2 steps wait for their third reward
    # steps 0, 1 of an episode sum 3 rewards; steps 2, 3 are cut by the time limit after 2 and 1
    assert rows["discount"].view(6, 4)[:, 0].tolist() == pytest.approx([0.99**3, 0.99**3, 0.99**2, 0.99, 0.99**3,
                                                                        0.99**3])  # fmt: skip
    assert torch.all(rows["reward"] < -0.99 * 0.99)  # near the bottom every reward is about −1
    early = ExactSACSearch(fam, fam.params_tensor(tasks), start_states(fam, tasks, 4, seed=0), envs_per_task=2,
                           episode_length=1, n_step=3, restart_from_replay=1.0, sac={"buffer_size": 100})  # fmt: skip
    early.train(3)  # the first restarts come before any transition is stored: from the start states
