//! The terminal as the live view needs it (raw mode, the alternate screen, no cursor), and
//! back as it was: on drop, and on a panic anywhere in the process (a hook restores it
//! before the message is printed, so the message lands on the main screen), as bpftop does.

use std::{
    fs::File,
    io,
    os::fd::AsRawFd as _,
    sync::{
        Once,
        atomic::{AtomicBool, Ordering},
    },
};

use ratatui::crossterm::{
    cursor, execute,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};

/// The terminal is in the view's state (so a panic hook knows there is something to undo).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Holds the terminal in the view's state; dropping it restores the terminal.
pub struct TerminalGuard(());

impl TerminalGuard {
    pub fn enter() -> io::Result<Self> {
        install_panic_hook();
        terminal::enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        // From here on, an error restores the terminal as the guard drops.
        let guard = Self(());
        keep_signals()?;
        execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves the alternate screen, shows the cursor and ends raw mode, once.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = execute!(io::stdout(), cursor::Show, LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// Raw mode turns Ctrl-C into a key; this gives it back its signal (ISIG), so Ctrl-C sends
/// SIGINT to the foreground process group as it does without the view (the traced command
/// gets it too) and the session ends the usual way, whatever the view's thread is doing.
/// Ctrl-Z stays off (VSUSP disabled): a stopped tracer would leave the terminal raw.
/// `disable_raw_mode` puts back the settings saved before any of this.
fn keep_signals() -> io::Result<()> {
    // The terminal crossterm changed: stdin if it is one, else the controlling terminal.
    let tty;
    // SAFETY: isatty only inspects the descriptor.
    let fd = if unsafe { libc::isatty(libc::STDIN_FILENO) } == 1 {
        libc::STDIN_FILENO
    } else {
        tty = File::options().read(true).write(true).open("/dev/tty")?;
        tty.as_raw_fd()
    };
    // SAFETY: termios is a plain C struct; all zeroes is a valid value that tcgetattr
    // overwrites.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open terminal and `t` a valid out-pointer.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    t.c_lflag |= libc::ISIG;
    // _POSIX_VDISABLE is 0 on Linux.
    t.c_cc[libc::VSUSP] = 0;
    // SAFETY: as above; `t` holds the settings just read, changed in two fields.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
