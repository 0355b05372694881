//! Drop folders written by anyone: links, swaps, devices and FIFOs, hostile names and output.
