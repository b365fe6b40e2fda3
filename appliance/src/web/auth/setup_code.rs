//! The one-time first-boot setup code (`--require-setup-code`): what it
//! looks like, how guesses are slowed, and the file the console shows it
//! from.
//!
//! Invariants:
//! * The code is [`CODE_LEN`] characters of the RFC 4648 base32 alphabet
//!   (60 bits), shown as `XXXX-XXXX-XXXX`; a guess is compared without
//!   dashes or spaces and case-insensitively, in constant time.
//! * Guesses are limited globally (one appliance, one code): after
//!   [`FREE_FAILURES`] wrong ones each further failure doubles the wait
//!   before the next guess is even compared, up to [`MAX_DELAY`]. Guesses
//!   refused for waiting do not add to the wait, so the admin is never kept
//!   out longer than [`MAX_DELAY`] after the last compared guess.
//! * The code is never logged. It is written to [`FILE`] in the data
//!   directory (mode 0600, written atomically) for the console, and that
//!   file is removed once setup is done.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The file in the data directory the console reads the code from.
pub(crate) const FILE: &str = "setup-code";
/// The file in the data directory the console reads the appliance id from.
pub(crate) const APPLIANCE_ID_FILE: &str = "appliance-id";
pub(crate) const CODE_LEN: usize = 12;
pub(crate) const FREE_FAILURES: u32 = 3;
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(60);
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

#[derive(Debug, thiserror::Error)]
pub enum SetupCodeError {
    #[error("setup_code is missing or wrong; it is shown on the appliance console")]
    Wrong,
    #[error("too many wrong setup codes; retry in {retry_after_s} s")]
    Wait { retry_after_s: u64 },
    #[error("cannot write {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Growing back-off over wrong guesses; pure, on plain `Instant`s.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Backoff {
    failures: u32,
    not_before: Option<Instant>,
}

impl Backoff {
    /// `Err(seconds to wait)` while the next guess may not be compared.
    pub(crate) fn check(&self, now: Instant) -> Result<(), u64> {
        match self.not_before {
            Some(at) if at > now => Err((at - now).as_secs_f64().ceil().max(1.0) as u64),
            _ => Ok(()),
        }
    }

    pub(crate) fn failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= FREE_FAILURES {
            let doublings = (self.failures - FREE_FAILURES).min(16);
            let delay = Duration::from_secs(1u64 << doublings).min(MAX_DELAY);
            self.not_before = Some(now + delay);
        }
    }
}

/// The code of this start, and the guesses made at it.
#[derive(Debug)]
pub struct SetupCode {
    /// Normalised: upper case, no dashes.
    code: String,
    file: Option<PathBuf>,
    backoff: Mutex<Backoff>,
}

impl SetupCode {
    /// A fresh random code (not yet written anywhere).
    pub(crate) fn generate() -> Self {
        let bytes: [u8; CODE_LEN] = rand::random();
        // 32 divides 256, so taking each byte mod 32 has no bias.
        let code = bytes
            .iter()
            .map(|b| char::from(ALPHABET[usize::from(b % 32)]))
            .collect();
        Self::from_code(code)
    }

    fn from_code(code: String) -> Self {
        Self {
            code,
            file: None,
            backoff: Mutex::default(),
        }
    }

    /// A fresh code, written to [`FILE`] in `data_dir` for the console.
    pub(crate) fn create(data_dir: &Path) -> Result<Self, SetupCodeError> {
        let mut code = Self::generate();
        let path = data_dir.join(FILE);
        write_private(&path, &format!("{}\n", code.display()))?;
        code.file = Some(path);
        Ok(code)
    }

    /// The code as shown to people: `XXXX-XXXX-XXXX`.
    pub(crate) fn display(&self) -> String {
        let groups: Vec<&str> = self
            .code
            .as_bytes()
            .chunks(4)
            .map(|chunk| std::str::from_utf8(chunk).expect("the alphabet is ASCII"))
            .collect();
        groups.join("-")
    }

    /// Compare a guess, unless guesses must wait; a wrong one adds to the
    /// back-off. Check and count happen under one lock, so parallel guesses
    /// cannot slip past the back-off together.
    pub(crate) fn attempt(&self, given: Option<&str>, now: Instant) -> Result<(), SetupCodeError> {
        let mut backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        backoff
            .check(now)
            .map_err(|retry_after_s| SetupCodeError::Wait { retry_after_s })?;
        let given = normalise(given.unwrap_or_default());
        if super::constant_time_eq(given.as_bytes(), self.code.as_bytes()) {
            Ok(())
        } else {
            backoff.failed(now);
            Err(SetupCodeError::Wrong)
        }
    }

    /// Setup is done: the console has nothing to show any more.
    pub(crate) fn remove_file(&self) {
        if let Some(path) = &self.file {
            remove_stale(path);
        }
    }
}

/// Remove the console's setup-code file in `data_dir` if one was left from an
/// earlier start (setup is done, or no code is required now).
pub(crate) fn remove_stale_file(data_dir: &Path) {
    remove_stale(&data_dir.join(FILE));
}

fn remove_stale(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "Cannot remove the setup code file");
        }
    }
}

/// Upper case, without dashes and white space.
fn normalise(given: &str) -> String {
    given
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Write `contents` to `path` with mode 0600, atomically (a temporary file in
/// the same directory, then a rename), so the console never reads half.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), SetupCodeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |source| SetupCodeError::File {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    file.write_all(contents.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_twelve_base32_characters_in_three_groups() {
        let code = SetupCode::generate();
        let shown = code.display();
        assert_eq!(shown.len(), 14, "{shown}");
        let groups: Vec<&str> = shown.split('-').collect();
        assert_eq!(groups.len(), 3);
        assert!(
            shown.bytes().all(|b| b == b'-' || ALPHABET.contains(&b)),
            "{shown}"
        );
        assert_ne!(SetupCode::generate().code, code.code, "random");
    }

    #[test]
    fn a_guess_is_accepted_with_or_without_dashes_in_any_case() {
        let code = SetupCode::from_code("ABCD2345WXYZ".to_owned());
        let now = Instant::now();
        assert!(code.attempt(Some("ABCD-2345-WXYZ"), now).is_ok());
        assert!(code.attempt(Some("abcd2345wxyz"), now).is_ok());
        assert!(code.attempt(Some(" abcd-2345-wxyz\n"), now).is_ok());
        assert!(matches!(
            code.attempt(Some("ABCD-2345-WXY"), now),
            Err(SetupCodeError::Wrong)
        ));
        assert!(matches!(
            code.attempt(None, now),
            Err(SetupCodeError::Wrong)
        ));
    }

    #[test]
    fn wrong_guesses_back_off_doubling_up_to_the_cap() {
        let mut backoff = Backoff::default();
        let start = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            assert!(backoff.check(start).is_ok());
            backoff.failed(start);
        }
        assert!(backoff.check(start).is_ok(), "a few are free");
        backoff.failed(start);
        assert_eq!(backoff.check(start), Err(1));
        let mut now = start;
        let mut waits = Vec::new();
        for _ in 0..10 {
            now += Duration::from_secs(backoff.check(now).err().unwrap_or(0));
            assert!(backoff.check(now).is_ok());
            backoff.failed(now);
            waits.push(backoff.check(now).expect_err("waits"));
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60, 60, 60]);
    }

    #[test]
    fn a_refused_guess_does_not_lengthen_the_wait_and_the_right_code_works_after_it() {
        let code = SetupCode::from_code("ABCD2345WXYZ".to_owned());
        let start = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert!(matches!(
                code.attempt(Some("wrong"), start),
                Err(SetupCodeError::Wrong)
            ));
        }
        for _ in 0..100 {
            assert!(matches!(
                code.attempt(Some("ABCD2345WXYZ"), start),
                Err(SetupCodeError::Wait { retry_after_s: 1 })
            ));
        }
        assert!(
            code.attempt(Some("ABCD2345WXYZ"), start + Duration::from_secs(1))
                .is_ok()
        );
    }

    #[test]
    fn the_file_is_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let code = SetupCode::create(dir.path()).expect("create");
        let path = dir.path().join(FILE);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.trim(), code.display());
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        code.remove_file();
        assert!(!path.exists());
        remove_stale_file(dir.path());
    }
}
