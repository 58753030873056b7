//! Bearer-token files (`daemon --api-token-file`, the client's `--token-file`): read only when
//! nobody but the owner can read them, as ssh does with its keys; a token others could read is no
//! secret, so it is refused with the fix (`chmod 600`).

use std::{os::unix::fs::MetadataExt as _, path::Path};

/// The token in `path` (its text, trimmed), for `flag`; refused when group or others may read or
/// write the file, or when it cannot be read.
pub fn read_token(flag: &str, path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("{flag}: cannot read {}: {e}", path.display()))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{flag}: {} has mode {mode:03o}, so others can read the token; run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{flag}: cannot read {}: {e}", path.display()))?;
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A token file with `mode` under the temp directory, removed on drop.
    struct TokenFile(std::path::PathBuf);

    impl Drop for TokenFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file(mode: u32) -> TokenFile {
        let p =
            std::env::temp_dir().join(format!("injector-secret-{}-{mode:o}", std::process::id()));
        std::fs::write(&p, "0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        TokenFile(p)
    }

    #[test]
    fn an_owner_only_file_is_read_and_trimmed() {
        for mode in [0o600, 0o400] {
            let f = file(mode);
            assert_eq!(read_token("--t", &f.0).unwrap(), "0123456789abcdef");
        }
    }

    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix() {
        for mode in [0o644, 0o640, 0o604, 0o620] {
            let f = file(mode);
            let e = read_token("--api-token-file", &f.0).unwrap_err();
            assert!(e.starts_with("--api-token-file: "), "{e}");
            assert!(e.contains(&format!("mode {mode:03o}")), "{e}");
            assert!(e.contains("chmod 600"), "{e}");
        }
    }

    #[test]
    fn a_missing_file_names_the_flag() {
        let e = read_token("--token-file", Path::new("/nonexistent/token")).unwrap_err();
        assert!(
            e.starts_with("--token-file: cannot read /nonexistent/token"),
            "{e}"
        );
    }
}
