"""The X-ray scan generator: physics, shapes, rendering and `pipeline synth`."""
