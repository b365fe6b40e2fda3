//! Desired configuration: the TOML schema users write (`schema`), the typed
//! model every subsystem reads (`model`), the one validator that turns the
//! first into the second (`validate`), where in a file a
//! problem lies (`locate`), and what changed between two configs (`diff`).
//!
//! Invariant: a `Config` value has passed `validate`; nothing else builds one.
//! Errors name file, line, column and field, and say how to fix the value.

pub mod diff;
mod locate;
pub mod model;
pub mod path;
pub mod schema;
pub mod validate;

use std::fmt;
use std::path::Path;

pub use diff::{ConfigDiff, diff};
pub use model::*;
pub use path::FieldPath;
pub use schema::*;
pub use validate::validate;

/// A config that could not be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", Problems(.problems, .file))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Read { .. } => &[],
            Self::Invalid { problems, .. } => problems,
        }
    }
}

/// One problem, located in the source text when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; 0 when the problem has no place in a text (e.g. JSON input).
    pub line: usize,
    pub column: usize,
    /// Dotted path such as `pool[0].member[1].name`; `None` for syntax errors.
    pub field: Option<String>,
    pub message: String,
}

struct Problems<'a>(&'a [Problem], &'a str);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{}:{}: ", self.1, problem.line, problem.column)?;
            if let Some(field) = &problem.field {
                write!(f, "{field}: ")?;
            }
            f.write_str(&problem.message)?;
        }
        Ok(())
    }
}

/// Parse and validate TOML text. `file` is only used in messages.
pub fn from_toml(text: &str, file: &str) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        file: file.to_owned(),
        problems,
    };
    let parsed: ConfigFile = match toml::from_str(text) {
        Ok(parsed) => parsed,
        Err(error) => return Err(invalid(vec![locate::toml_error(text, &error)])),
    };
    validate(&parsed).map_err(|errors| {
        invalid(
            errors
                .iter()
                .map(|error| locate::field_error(text, error))
                .collect(),
        )
    })
}

/// Read, parse and validate a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    from_toml(&text, &file)
}

/// The TOML form of a config, accepted again by `from_toml`.
pub fn to_toml(config: &Config) -> String {
    toml::to_string(config.source()).expect("every ConfigFile value is representable in TOML")
}

#[cfg(test)]
mod tests;
