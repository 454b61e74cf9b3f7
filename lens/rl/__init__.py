"""Reinforcement learning with verifiable rewards (GRPO through TRL), its rewards and data regimes."""

from .data import majority_wrong_labels, one_shot_by_variance, organism_train_problems, regime
from .evaluate import evaluate_policy
from .grpo import RLConfig, train_rl
from .log import accuracy_history, curve, read_log
from .rewards import REWARDS, RewardContext, get_reward

__all__ = ["REWARDS", "RLConfig", "RewardContext", "accuracy_history", "curve", "evaluate_policy", "get_reward",
           "majority_wrong_labels", "one_shot_by_variance", "organism_train_problems", "read_log", "regime",
           "train_rl"]
