"""Garo's AWS department: one ComponentResource per concept, mirroring the GCP ones (docs/deploy-aws.md)."""
