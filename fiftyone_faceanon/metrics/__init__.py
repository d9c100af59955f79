"""Metrics suite (paper Table I): how well an anonymization worked, per face and per dataset."""
