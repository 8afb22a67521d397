"""Pure measures shared by the allocator and the learner: energy model, parameter variation,
balance, imbalance, accuracy. Depends on nothing else in dmmlkd."""
