//! The binary's refusals: what an operator sees when the configuration is incomplete.
//! (Runs against a server are in the workspace's `tests` package.)

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_builtiful-provisioner");

fn run(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(BIN)
        .env_clear()
        .envs(envs.iter().copied())
        .args(["--config", "/dev/null"])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn incomplete_configuration_is_named_and_the_token_is_never_shown() {
    let (code, stderr) = run(
        &["--launcher", "/bin/true"],
        &[("BUILTIFUL_TOKEN", "bfp_s3cret")],
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no server: pass --server URL"), "{stderr}");

    let (code, stderr) = run(
        &["--server", "http://127.0.0.1:9", "--launcher", "/bin/true"],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no provisioner token"), "{stderr}");

    let (code, stderr) = run(
        &[
            "--server",
            "http://127.0.0.1:9",
            "--vcpus",
            "2",
            "--reserve-vcpus",
            "2",
        ],
        &[
            ("BUILTIFUL_TOKEN", "bfp_s3cret"),
            ("BUILTIFUL_LAUNCHER", "/bin/true"),
        ],
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("--reserve-vcpus (2) must be below the host's vCPUs (2)"),
        "{stderr}"
    );
    assert!(!stderr.contains("bfp_s3cret"), "{stderr}");
}

#[test]
fn help_lists_the_contract_flags() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--config",
        "--server",
        "--token",
        "--host",
        "--vcpus",
        "--reserve-vcpus",
        "--executor",
        "--launcher",
        "--state-dir",
        "--metrics-listen",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.contains("BUILTIFUL_RESERVE_VCPUS"), "{help}");
}
