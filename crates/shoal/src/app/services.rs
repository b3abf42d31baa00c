//! Which services start, and in what order: `services.enabled` (all registered when absent)
//! plus everything they `require`, dependencies first.

use std::collections::HashMap;

/// Returns the indices into `registered` (name, requires) to start, dependencies first.
/// Unknown names and cycles are errors that name them.
pub(crate) fn resolve(
    registered: &[(String, Vec<String>)],
    enabled: Option<&[String]>,
) -> Result<Vec<usize>, String> {
    let index: HashMap<&str, usize> = registered
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.as_str(), i))
        .collect();
    let known = || {
        let mut names: Vec<&str> = registered.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        names.join(", ")
    };
    let roots: Vec<usize> = match enabled {
        None => (0..registered.len()).collect(),
        Some(names) => names
            .iter()
            .map(|name| {
                index.get(name.as_str()).copied().ok_or_else(|| {
                    format!(
                        "services.enabled names `{name}`, which is not a service of this application (known: {})",
                        known()
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    let mut marks = vec![Mark::New; registered.len()];
    let mut order = Vec::new();
    let mut path: Vec<usize> = Vec::new();

    fn visit(
        at: usize,
        registered: &[(String, Vec<String>)],
        index: &HashMap<&str, usize>,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), String> {
        match marks[at] {
            Mark::Done => return Ok(()),
            Mark::Visiting => {
                let start = path.iter().position(|&i| i == at).unwrap_or(0);
                let mut cycle: Vec<&str> = path[start..]
                    .iter()
                    .map(|&i| registered[i].0.as_str())
                    .collect();
                cycle.push(registered[at].0.as_str());
                return Err(format!(
                    "services require each other in a cycle: {}",
                    cycle.join(" -> ")
                ));
            }
            Mark::New => {}
        }
        marks[at] = Mark::Visiting;
        path.push(at);
        for dep in &registered[at].1 {
            let Some(&d) = index.get(dep.as_str()) else {
                return Err(format!(
                    "service `{}` requires `{dep}`, which is not a service of this application",
                    registered[at].0
                ));
            };
            visit(d, registered, index, marks, path, order)?;
        }
        path.pop();
        marks[at] = Mark::Done;
        order.push(at);
        Ok(())
    }

    for root in roots {
        visit(root, registered, &index, &mut marks, &mut path, &mut order)?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        services: &[(&str, &[&str])],
        enabled: Option<&[&str]>,
        expected: Result<&[&str], &str>,
    ) {
        let registered: Vec<(String, Vec<String>)> = services
            .iter()
            .map(|(n, r)| (n.to_string(), r.iter().map(|s| s.to_string()).collect()))
            .collect();
        let enabled: Option<Vec<String>> =
            enabled.map(|e| e.iter().map(|s| s.to_string()).collect());
        let got = resolve(&registered, enabled.as_deref()).map(|order| {
            order
                .into_iter()
                .map(|i| registered[i].0.clone())
                .collect::<Vec<_>>()
        });
        match (got, expected) {
            (Ok(order), Ok(want)) => assert_eq!(order, want, "{services:?} {enabled:?}"),
            (Err(e), Err(want)) => assert!(e.contains(want), "{e} does not contain {want}"),
            (got, want) => panic!("{services:?} {enabled:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn enabled_services_and_their_requirements_start_dependencies_first() {
        let app: &[(&str, &[&str])] = &[
            ("calc", &["history"]),
            ("history", &["store"]),
            ("store", &[]),
            ("extra", &[]),
        ];
        check(app, None, Ok(&["store", "history", "calc", "extra"]));
        check(app, Some(&["calc"]), Ok(&["store", "history", "calc"]));
        check(app, Some(&["extra"]), Ok(&["extra"]));
        check(
            app,
            Some(&["history", "calc"]),
            Ok(&["store", "history", "calc"]),
        );
        check(app, Some(&[]), Ok(&[]));
    }

    #[test]
    fn unknown_and_cyclic_names_are_errors_naming_them() {
        let app: &[(&str, &[&str])] = &[("a", &["b"]), ("b", &[])];
        check(app, Some(&["nope"]), Err("services.enabled names `nope`, which is not a service of this application (known: a, b)"));
        check(
            &[("a", &["ghost"])],
            None,
            Err("service `a` requires `ghost`"),
        );
        check(
            &[("a", &["b"]), ("b", &["c"]), ("c", &["a"])],
            None,
            Err("cycle: a -> b -> c -> a"),
        );
        check(&[("self", &["self"])], None, Err("cycle: self -> self"));
    }
}
