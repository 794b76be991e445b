//! Real Dynamo from PyPI, installed and started on this machine.
