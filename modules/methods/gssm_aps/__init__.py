"""GSSM+APS: the APS LightningModule, its imagination and the phases of its Dyna loop."""
