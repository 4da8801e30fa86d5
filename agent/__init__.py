"""The em-agent daemon: settings, CLI, EPU ingest, instruction execution and the device layer.

Subpackages are imported explicitly where needed (nothing is imported here), so importing one part of the
agent never pulls in optional extras such as torch or opencv.
"""
