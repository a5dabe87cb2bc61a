"""Learned dynamics models: GSSM and its MLSM ablations (``MetaDynamicsNet``, trained by the
``MetaDynamicsModel`` LightningModule), L2A's MAML MLP, M-DPILCO's embedded ensemble, and the
learned model as a batched env. They import ``modules.blocks``, never ``policies`` or ``methods``."""
