//! Local sandbox provisioner.
