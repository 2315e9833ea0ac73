"""Tests on more than one real libvirt host (a second one in namespaces of its own)."""
