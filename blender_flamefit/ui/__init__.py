"""User interface: operators (and the one modal job runner they share), the sidebar panel,
add-on preferences and the scene / window-manager properties."""
