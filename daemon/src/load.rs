//! Loading a configuration file: read it, substitute `${ENV}` references, parse the TOML,
//! resolve relative paths against the file's directory, then validate (`validate.rs`).
//! Every error is a [`ConfigError`] naming the file, the line and column, and the reason.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::config::{line_col, substitute_env, Config, ConfigError, ConfigErrorKind};

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            location: None,
            reason: Box::new(ConfigErrorKind::Read(e)),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` names it in errors and is
    /// remembered for reloads (relative `password_file`s are resolved against its directory).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let substituted =
            substitute_env(text, |name| std::env::var(name).ok()).map_err(|(offset, name)| {
                ConfigError {
                    file: path.to_path_buf(),
                    location: Some(line_col(text, offset)),
                    reason: Box::new(ConfigErrorKind::EnvVar(name)),
                }
            })?;
        let text = substituted.as_str();
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            location: e.span().map(|s| line_col(text, s.start)),
            reason: Box::new(ConfigErrorKind::Syntax(e.message().trim_end().to_string())),
        })?;
        config.path = Some(path.to_path_buf());
        config.resolve_paths();
        super::validate::validate(&mut config).map_err(|(span, reason)| ConfigError {
            file: path.to_path_buf(),
            location: span.map(|s| line_col(text, s.start)),
            reason: Box::new(reason),
        })?;
        Ok(config)
    }

    /// Makes every relative path of the file (store, password files, TLS files, the
    /// bearer token file) relative to the file's directory instead of the working
    /// directory: one rule for every path.
    fn resolve_paths(&mut self) {
        let base = self.base_dir();
        let abs = |p: &Path| -> PathBuf {
            if p.is_absolute() || base.as_os_str().is_empty() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let spanned = |p: &mut Spanned<PathBuf>| {
            *p = Spanned::new(p.span(), abs(p.get_ref()));
        };
        if let Some(p) = self.store.as_mut().and_then(|s| s.path.as_mut()) {
            spanned(p);
        }
        if let Some(h) = self.http.as_mut() {
            if let Some(p) = h.bearer_token_file.as_mut() {
                spanned(p);
            }
            if let Some(t) = h.tls.as_mut() {
                spanned(&mut t.cert_file);
                spanned(&mut t.key_file);
            }
        }
        for s in &mut self.sessions {
            if let Some(p) = s.password_file.as_mut() {
                spanned(p);
            }
            if let Some(t) = s.tls.as_mut() {
                for f in [&mut t.ca_file, &mut t.client_cert, &mut t.client_key] {
                    if let Some(p) = f.as_mut() {
                        *p = abs(p);
                    }
                }
            }
        }
    }
}
