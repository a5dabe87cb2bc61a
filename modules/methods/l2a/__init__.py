"""L2A (GrBAL): the MAML-trained dynamics learner and its MPPI agent."""
