"""The learner-allocator bridge: round states in, allocation problems solved, iteration tables out.

The learner never imports the allocator; the policies here wire the two together, and
`bridge.training` runs one learning run with its outputs on disk, `bridge.distributed_entry`
the same run as N processes (`dmmlkd train --nproc N`).
"""
