"""Tiny HAVIC fine-tuning: the classifier on the tiny model, seconds on a CPU."""

from configs.tiny import tiny_config


def get_config():
  config = tiny_config("finetune")
  config.optimizer.restart_every_steps = 400
  config.optimizer.pretrained_learning_rate = 3e-4
  config.optimizer.new_learning_rate = 3e-3
  # At 32×32 the tiny model learns the synthetic fakes' visual traces within a few hundred CPU
  # steps only without classifier dropout, weight decay and the video augmentations; the base
  # configs keep the spec's values.
  config.model.classifier_dropout = (0.0, 0.0)
  config.optimizer.weight_decay = 0.0
  config.augment.video = False
  return config
