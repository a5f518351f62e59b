"""Tests of deploy/: cloud work-pool templates and the landing-event bridge."""
