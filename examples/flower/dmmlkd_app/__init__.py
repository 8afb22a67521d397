"""dmmlkd's Flower app: the allocator as the strategy, dmmlkd's learner as the ClientApp."""
