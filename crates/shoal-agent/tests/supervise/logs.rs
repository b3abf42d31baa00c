//! Output capture: stdout and stderr into their logs, rotated by size, the rotated files
//! compressed and pruned, the active name stable.

use std::io::Read;

use shoal_pkg::manifest::Logs;

use crate::common::{eventually, n, unstamp, Env};

#[tokio::test]
async fn output_is_captured_rotated_and_compressed() {
    let env = Env::new("logs");
    let supervisor = env.supervisor().await;
    // 800 numbered lines of 40 bytes on stdout (32 KB), a few on stderr, then waits.
    let mut spec = env.spec(
        "chatty",
        "i=0\n\
         while [ $i -lt 800 ]; do printf 'out %04d ..............................\\n' $i; \
         i=$((i+1)); done\n\
         echo 'err 1' >&2\necho 'err 2' >&2\nexec sleep 600",
    );
    spec.logs = Logs {
        max_size: 8000,
        keep: 2,
    };
    supervisor.add(spec).await.unwrap();
    supervisor.start(&n("chatty")).await.unwrap();

    let dir = env.data.logs(&n("chatty"));
    eventually("the last line logged", || {
        env.log("chatty", "stdout")
            .contains("out 0799")
            .then_some(())
    })
    .await;
    // The rotated files are gzipped and pruned in the background: wait for exactly `keep`
    // of them, none left uncompressed.
    let rotated = eventually("two compressed rotated files", || {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("stdout.log."))
            .collect();
        // Rotated in the same second: NAME.STAMP.gz, then NAME.STAMP-1.gz, and so on.
        names.sort_by_key(|name| rotation_order(name));
        (names.len() == 2 && names.iter().all(|n| n.ends_with(".gz"))).then_some(names)
    })
    .await;

    // Newest first: the active file, then the rotated ones; together they end with every
    // line up to the last, in order, none cut.
    let mut text = String::new();
    for name in &rotated {
        let mut gz = flate2::read::GzDecoder::new(std::fs::File::open(dir.join(name)).unwrap());
        let mut rotated = String::new();
        gz.read_to_string(&mut rotated).unwrap();
        text.push_str(&unstamp(&rotated));
    }
    let active = env.log("chatty", "stdout");
    assert!(active.len() <= 8000, "{} bytes", active.len());
    text.push_str(&active);
    let numbers: Vec<u32> = text
        .lines()
        .map(|line| {
            assert_eq!(line.len(), 39, "{line:?}");
            line[4..8].parse().unwrap()
        })
        .collect();
    assert_eq!(*numbers.last().unwrap(), 799);
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    assert!(numbers.len() >= 100, "only {} lines kept", numbers.len());

    eventually("stderr logged", || {
        (env.log("chatty", "stderr") == "err 1\nerr 2\n").then_some(())
    })
    .await;
    supervisor.shutdown().await;
}

/// A rotated file's place in time: its stamp, then its number within that second.
fn rotation_order(name: &str) -> (String, u32) {
    let stem = name.trim_end_matches(".gz");
    match stem.rsplit_once('-') {
        Some((stamp, n)) if n.parse::<u32>().is_ok() => (stamp.to_owned(), n.parse().unwrap()),
        _ => (stem.to_owned(), 0),
    }
}
