//! The CNI spec versions this plugin speaks, and which verbs each allows.
//!
//! The plugin answers in the version the request names (results and errors echo it), as the
//! Go skeleton does: a config version must be exactly one of [`SUPPORTED`], CHECK needs
//! 0.4.0 or later, STATUS and GC need 1.1.0.

use std::fmt;
use std::str::FromStr;

use crate::env::Command;
use crate::error::{code, CniError};

/// A spec version this plugin can read configs of and write results in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// Every version, oldest first, as VERSION lists them.
pub const SUPPORTED: [CniVersion; 4] = [
    CniVersion::V0_3_1,
    CniVersion::V0_4_0,
    CniVersion::V1_0_0,
    CniVersion::V1_1_0,
];

/// The newest version: what VERSION answers with when the request names none.
pub const LATEST: CniVersion = CniVersion::V1_1_0;

impl CniVersion {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V0_3_1 => "0.3.1",
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    /// Results before 1.0.0 tag each IP with `"version": "4"|"6"`.
    pub fn ips_carry_version(self) -> bool {
        self < Self::V1_0_0
    }

    /// 1.1.0 adds `interfaces[].mtu` (with `socketPath`, `pciID`) and route attributes.
    pub fn has_interface_mtu(self) -> bool {
        self >= Self::V1_1_0
    }

    /// Whether a config of this version may ask for `command` (VERSION always works).
    pub fn allows(self, command: Command) -> Result<(), CniError> {
        let needed = match command {
            Command::Check => Self::V0_4_0,
            Command::Status | Command::Gc => Self::V1_1_0,
            Command::Add | Command::Del | Command::Version => Self::V0_3_1,
        };
        if self >= needed {
            Ok(())
        } else {
            Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("config version {self} does not allow {command}"),
            )
            .with_details(format!("{command} needs cniVersion {needed} or later")))
        }
    }
}

/// The `cniVersion` of a request, when it is not one of [`SUPPORTED`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("incompatible CNI versions: config is {given:?}, plugin supports {supported}")]
pub struct UnsupportedVersion {
    /// What the config said; `0.1.0` when it said nothing (the spec's default).
    pub given: String,
    pub supported: SupportedList,
}

/// Displays as `["0.3.1","0.4.0","1.0.0","1.1.0"]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SupportedList;

impl fmt::Display for SupportedList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = SUPPORTED
            .iter()
            .map(|v| format!("\"{}\"", v.as_str()))
            .collect();
        write!(f, "[{}]", names.join(","))
    }
}

impl From<UnsupportedVersion> for CniError {
    fn from(error: UnsupportedVersion) -> Self {
        CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI versions").with_details(
            format!(
                "config is {:?}, plugin supports {}",
                error.given, error.supported
            ),
        )
    }
}

impl FromStr for CniVersion {
    type Err = UnsupportedVersion;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SUPPORTED
            .into_iter()
            .find(|v| v.as_str() == text)
            .ok_or_else(|| UnsupportedVersion {
                given: if text.is_empty() { "0.1.0" } else { text }.to_string(),
                supported: SupportedList,
            })
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_four_versions_parse() {
        for version in SUPPORTED {
            assert_eq!(version.as_str().parse::<CniVersion>(), Ok(version));
        }
        for bad in [
            "", "0.1.0", "0.2.0", "0.3.0", "1.0", "1.2.0", "v1.0.0", " 1.0.0",
        ] {
            assert!(bad.parse::<CniVersion>().is_err(), "{bad:?}");
        }
        let missing = "".parse::<CniVersion>().unwrap_err();
        assert_eq!(missing.given, "0.1.0", "no version means 0.1.0 per spec");
        let error = CniError::from("0.2.0".parse::<CniVersion>().unwrap_err());
        assert_eq!(error.code, code::INCOMPATIBLE_VERSION);
        assert_eq!(
            error.details.as_deref(),
            Some("config is \"0.2.0\", plugin supports [\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]")
        );
    }

    #[test]
    fn verbs_need_their_spec_version() {
        use Command::*;
        for command in [Add, Del, Version] {
            assert!(CniVersion::V0_3_1.allows(command).is_ok());
        }
        assert_eq!(
            CniVersion::V0_3_1.allows(Check).unwrap_err().code,
            code::INCOMPATIBLE_VERSION
        );
        assert!(CniVersion::V0_4_0.allows(Check).is_ok());
        for command in [Status, Gc] {
            assert!(CniVersion::V1_0_0.allows(command).is_err());
            assert!(CniVersion::V1_1_0.allows(command).is_ok());
        }
    }

    #[test]
    fn result_shape_follows_the_version() {
        assert!(CniVersion::V0_3_1.ips_carry_version());
        assert!(CniVersion::V0_4_0.ips_carry_version());
        assert!(!CniVersion::V1_0_0.ips_carry_version());
        assert!(!CniVersion::V1_0_0.has_interface_mtu());
        assert!(CniVersion::V1_1_0.has_interface_mtu());
    }
}
