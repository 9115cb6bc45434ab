"""Model folders and datasets on disk: manifests, reference scores, names, data files."""
