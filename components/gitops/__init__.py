"""GitOps: promote a registered version to an environment with a commit that Argo CD syncs."""
