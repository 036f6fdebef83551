"""Other media servers the benchmark measures side by side with ours (docs/benchmarks.md).

`netns` makes the private network they run in (network namespaces joined by a veth pair, so that
nothing leaves this machine and nothing touches its own addresses), `janus` drives Debian's Janus
(VideoRoom plugin): its configuration, its process and, in the client processes, its signaling.
"""
