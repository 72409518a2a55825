//! `gridwatch check`: every configuration and rule problem at once, exit status 1.

use std::process::Command;

use crate::support::repo_root;

fn check(config: &std::path::Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("failed to run gridwatch check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

#[test]
fn shipped_config_passes_check() {
    let (code, output) = check(&repo_root().join("config/gridwatch.toml"));
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("valid"), "{output}");
}

#[test]
fn check_reports_config_and_rule_problems() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules/common");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("good.rhai"),
        "fn on_reading(reading, meter) { }\n",
    )
    .unwrap();
    std::fs::write(
        rules.join("broken.rhai"),
        "fn on_reading(reading, meter) {\n  let x = ;\n}\n",
    )
    .unwrap();
    let config = dir.path().join("gridwatch.toml");
    std::fs::write(
        &config,
        "[mqtt]\nbogus_key = 1\nkeep_alive_secs = \"thirty\"\npassword = 42424242\n\n\
         [rules]\ndir = \"rules\"\n",
    )
    .unwrap();

    let (code, output) = check(&config);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("bogus_key"),
        "unknown key reported: {output}"
    );
    assert!(
        output.contains("mqtt.keep_alive_secs"),
        "type error reported: {output}"
    );
    assert!(
        output.contains("mqtt.password"),
        "secret key named: {output}"
    );
    assert!(
        !output.contains("42424242"),
        "secret value echoed: {output}"
    );
    assert!(
        output.contains("broken.rhai:2"),
        "rule file and line reported: {output}"
    );
}

#[test]
fn rule_tests_pass_and_catch_mismatch() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
            .current_dir(repo_root())
            .env("RUST_LOG", "warn")
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, stdout) = run(&["rules", "test", "--rules", "rules"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("PASS rules/common/mining.test.toml"),
        "{stdout}"
    );
    assert!(stdout.contains(" 0 failed, in 3 files"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let test = dir.path().join("wrong.test.toml");
    let text = "[[case]]\nname = \"cover opening expected as low\"\nregion = \"south\"\n\
                [[case.readings]]\nmeter = \"m-1\"\nts = \"2025-06-01T00:00:00Z\"\n\
                energy_import_kwh = 1.0\nevents = [\"cover_open\"]\n\
                [[case.expect]]\nmeter = \"m-1\"\nkind = \"tamper\"\nseverity = \"low\"\n";
    std::fs::write(&test, text).unwrap();
    let test = test.to_string_lossy().into_owned();
    let (code, stdout) = run(&["rules", "test", "--rules", "rules", &test]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(
        stdout.contains("-m-1 tamper low"),
        "expected line in the diff: {stdout}"
    );
    assert!(
        stdout.contains("+m-1 tamper high"),
        "raised line in the diff: {stdout}"
    );
}
