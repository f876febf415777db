//! Helpers shared by the end-to-end tests: a temporary folder per test and
//! a runner of the real `kcap` executable.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const KCAP: &str = env!("CARGO_BIN_EXE_kcap");

/// A fresh folder for one test, removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("kcap-cli-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.0.join(file);
        std::fs::write(&p, text).unwrap();
        p
    }
    pub fn out(&self) -> PathBuf {
        self.0.join("out")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Exit code and output of one `kcap` run.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `kcap args` in `cwd`.
pub fn kcap(args: &[&str], cwd: &Path) -> Output {
    let o = Command::new(KCAP)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run kcap");
    Output {
        code: o.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

/// A procedural area of n = 5·10⁹ (ids beyond u32; a step scans its 76 294
/// target blocks, a few CPU-seconds) fed by a stimulus and a
/// lazy area, with an assembly activated at the top of the area and
/// unfixed again (actions mid-schedule); winners saved.
pub const PROCEDURAL: &str = r#"[brain]
p = 0.000001
seed = 4
save_winners = true

[[stimulus]]
name = "s"
size = 20

[[area]]
name = "L"
n = 100_000_000
k = 10
beta = 0.05

[[area]]
name = "P"
n = 5_000_000_000
k = 10
beta = 0.1
engine = "procedural"

[[step]]
fire = { s = ["P", "L"] }

[[step]]
activate = { area = "P", index = 499_999_998 }
fire = { s = ["P"] }

[[step]]
unfix = ["P"]
fire = { s = ["P", "L"], P = ["P"], L = ["P", "L"] }
"#;
