//! The TSV parsers: errors name the line, and no input makes them panic.

use graphdb::import::{parse_package_sets_str, parse_teams_str, ImportError, LineProblem, TeamRow};
use graphdb::{EdgeKind, Role};
use proptest::prelude::*;

fn line_of(err: ImportError) -> (usize, LineProblem) {
    match err {
        ImportError::Line { line, problem } => (line, problem),
        other => panic!("expected a line error, got {other}"),
    }
}

#[test]
fn team_rows_parse() {
    let rows = parse_teams_str(
        "team\tmember\trole\texpires\r\n\
         t\tp\tadmin\t-5\r\n\
         \n\
         t\tq\taudits\t\n\
         u\t\t\t\n\
         \tv\t\t",
    )
    .unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows.row(0).unwrap(),
        TeamRow::Edge {
            line: 2,
            team: "t",
            member: "p",
            kind: EdgeKind::Membership(Role::Admin),
            expires: Some(-5)
        }
    );
    assert!(
        matches!(rows.row(1).unwrap(), TeamRow::Edge { line: 4, kind: EdgeKind::Relation(r), .. } if r == "audits")
    );
    assert_eq!(rows.row(2).unwrap(), TeamRow::Team { line: 5, name: "u" });
    assert_eq!(rows.row(3).unwrap(), TeamRow::Person { line: 6, name: "v" });
}

#[test]
fn team_errors_name_the_line() {
    let h = "team\tmember\trole\texpires\n";
    type Case = (&'static str, usize, fn(&LineProblem) -> bool);
    let cases: &[Case] = &[
        ("", 1, |p| matches!(p, LineProblem::MissingHeader { .. })),
        ("team\tmember\n", 1, |p| {
            matches!(p, LineProblem::BadHeader { .. })
        }),
        ("t\tp\tmember\n", 2, |p| {
            matches!(
                p,
                LineProblem::FieldCount {
                    expected: 4,
                    found: 3
                }
            )
        }),
        ("t\tp\town er\t\n", 2, |p| {
            matches!(p, LineProblem::BadRole { .. })
        }),
        ("t\tp\tAudits\t\n", 2, |p| {
            matches!(p, LineProblem::BadRole { .. })
        }),
        ("t\tp\tmember\t1e5\n", 2, |p| {
            matches!(p, LineProblem::BadExpiry { .. })
        }),
        ("t\tp\tmember\t99999999999999999999\n", 2, |p| {
            matches!(p, LineProblem::BadExpiry { .. })
        }),
        ("t\tp\tmember\t\nt\tp\tadmin\t\n", 3, |p| {
            matches!(p, LineProblem::Duplicate { first: 2 })
        }),
        ("\t\t\t\n", 2, |p| {
            matches!(p, LineProblem::BadDeclaration(_))
        }),
        ("t\t\tmember\t\n", 2, |p| {
            matches!(p, LineProblem::BadDeclaration(_))
        }),
        ("t\tp\x07\tmember\t\n", 2, |p| {
            matches!(p, LineProblem::BadName { .. })
        }),
    ];
    for (body, line, check) in cases {
        let text = if body.is_empty() || body.starts_with("team\t") {
            (*body).to_owned()
        } else {
            format!("{h}{body}")
        };
        let (got_line, problem) = line_of(
            parse_teams_str(&text)
                .err()
                .unwrap_or_else(|| panic!("{body:?} parsed")),
        );
        assert_eq!(got_line, *line, "{body:?}: {problem}");
        assert!(check(&problem), "{body:?}: {problem}");
    }
    let bytes = b"team\tmember\trole\texpires\nt\t\xff\tmember\t\n";
    let (line, problem) = line_of(graphdb::import::parse_teams(&bytes[..]).unwrap_err());
    assert_eq!((line, problem), (2, LineProblem::NotUtf8));
}

#[test]
fn package_set_errors_name_the_line() {
    let h = "set\titem\ttype\n";
    let ok = parse_package_sets_str(&format!("{h}s\tp\tpackage\ns\t\t\n\tq\tset\n")).unwrap();
    assert_eq!(ok.len(), 3);
    let cases: &[(&str, usize)] = &[
        ("s\tp\tpkg\n", 2),
        ("s\tp\n", 2),
        ("s\tp\tpackage\nt\ts\tpackage\n", 3),
        ("s\tp\tpackage\ns\tp\tpackage\n", 3),
        ("s\t\tset\n", 2),
        ("\tp\t\n", 2),
    ];
    for (body, line) in cases {
        let (got, problem) = line_of(parse_package_sets_str(&format!("{h}{body}")).unwrap_err());
        assert_eq!(got, *line, "{body:?}: {problem}");
    }
}

proptest! {
    #[test]
    fn parsers_never_panic(text in "(team\tmember\trole\texpires\n|set\titem\ttype\n)?[a-z\t\n\r0-9\\-\u{7}é]{0,200}") {
        let teams = parse_teams_str(&text);
        let sets = parse_package_sets_str(&text);
        // A parse either succeeds or names a line of the input.
        let lines = text.split('\n').count().max(1);
        for err in [teams.err().map(|e| e.to_string()), sets.err().map(|e| e.to_string())].into_iter().flatten() {
            let n: usize = err.trim_start_matches("line ").split(':').next().unwrap().parse().unwrap();
            prop_assert!(n >= 1 && n <= lines, "{err} for {text:?}");
        }
    }

    #[test]
    fn parsers_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut input = b"team\tmember\trole\texpires\n".to_vec();
        input.extend_from_slice(&bytes);
        let lines = input.split(|&b| b == b'\n').count();
        if let Ok(rows) = graphdb::import::parse_teams(&input[..]) {
            for row in rows.rows() {
                let line = match row {
                    TeamRow::Edge { line, .. } | TeamRow::Team { line, .. } | TeamRow::Person { line, .. } => line,
                };
                prop_assert!(line >= 2 && line <= lines);
            }
        }
        if let Err(ImportError::Line { line, .. }) = graphdb::import::parse_package_sets(&bytes[..]) {
            prop_assert!(line >= 1 && line <= bytes.split(|&b| b == b'\n').count().max(1));
        }
    }
}
