//! The local API's `POST /network/<nwid>` body (ZeroTier One's join and settings update),
//! applied to a network's local settings as the agent does, and the settings file it writes
//! (`networks.d/<nwid>.local.conf`), read back. The first byte picks: even, the body; odd,
//! the file as it may be found on disk.
//!
//! Properties, beyond "never panics": settings written read back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use zt_agent::networks::LocalSettings;

fn round_trip(settings: LocalSettings) {
    assert_eq!(
        LocalSettings::parse(&settings.render()),
        settings,
        "written settings read back differently"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    if selector & 1 == 1 {
        round_trip(LocalSettings::parse(&String::from_utf8_lossy(bytes)));
        return;
    }
    // The API reads an empty body as `{}`; anything else must be JSON.
    let body: Value = if bytes.is_empty() {
        Value::Object(Default::default())
    } else {
        match serde_json::from_slice(bytes) {
            Ok(body) => body,
            Err(_) => return,
        }
    };
    let mut settings = LocalSettings::default();
    settings.update_from_json(&body);
    round_trip(settings);
    // A second update with the same body changes nothing.
    let mut again = settings;
    again.update_from_json(&body);
    assert_eq!(again, settings, "applying a body twice differs");
});
