# Stage rules: see CONTRIBUTING.md. Targets are added to STAGE_TARGETS in common.smk.
