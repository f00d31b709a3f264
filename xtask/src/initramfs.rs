//! The initramfs for the VM (owned by the VM harness work).
