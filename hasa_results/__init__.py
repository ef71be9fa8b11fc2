"""The HASA artifact's study: every table, figure and sentence of the artifact, made from records.

It trains nothing and holds no model numerics: it asks :mod:`hasa_core` for numbers through the
record store (:mod:`hasa_records`), and turns records into frames, tests, tables, figures, words
and pages. Imports: :mod:`hasa_core`, :mod:`hasa_records`; never :mod:`hasa_flower` or
:mod:`hasa_bench` (it reads their CSVs).

One module per study, on shared layers:

    shared layers   outputs (where tables and figures go; staging), experiments (every experiment
                    by name, seeds, method labels, precompute), plan (the declared primary tests
                    and the verdict scheme), words (numbers in words),
                    stats (paired tests, Holm, power), frames (records -> pandas), figures (the
                    house style and the shared plots)
    studies         claims (claims 1-4, the plan, the headline and its verdicts: notebooks 01-06),
                    spec_curve (notebook 09), mechanism (notebook 10), scale (notebooks 07-08),
                    shakespeare (the second benchmark and the cross-benchmark table: notebook 11)
    pages           report (README blocks, results/REPORT.md, ``report --check``)

Two rules keep the layout true:
* a function used by one notebook lives in that notebook's study module; one used by two or more
  lives in a shared layer;
* a sentence the README also shows is a function in the study module; a notebook-only conclusion
  stays in the notebook.

The map: how one number travels from the data to the README (claim 1's HASA - uniform mean).

    data      hasa_core.load_medium -> medium_partition(cfg, seed): the 7 clients' splits and vocabulary
    task      hasa_core.load_task(cfg, seed)
    plan      hasa_core.plan(cfg, task, seed): scores (Eq. 11) -> widths (Eqs. 13-17)
    run       hasa_core.run(cfg, seed): 30 rounds of local SGD + aggregation -> per-client accuracy
    record    hasa_records.cached_run / run_many: results/runs/<cfg.key()>/seed<N>.json (checked)
    frame     experiments.run_experiment("claims", "paper") -> frames.records_frame: one row per run
    test      claims: the declared primary test of the plan -> stats.paired_stats + the family's adjustment
    table     outputs.save_table(tests, "claims_primary") -> results/claims_primary.{csv,md}
    headline  claims.headline_table() reads that CSV -> results/headline.{csv,md} (notebook 06)
    README    report.write_report() fills <!-- table: headline --> and the generated verdict sentences;
              ``python -m hasa_results report --check`` (run by ``make test``) fails when README.md
              or results/REPORT.md differ from what results/ produces.

Every step calls the next module down (notebook -> hasa_results -> hasa_records -> hasa_core),
never back. The notebooks use ``import hasa_results as R``: every public name below is here.
"""
from hasa_results.claims import (  # noqa: F401
    AS_PUBLISHED_PAIRS,
    FIGURES,
    HEADLINE_NAMES,
    OFFICIAL,
    PAPER_SAYS,
    calibrated_primaries,
    claim4_tracking,
    claim_text,
    claim_verdicts,
    claim_words,
    evaluation_effects,
    fidelity_table,
    footprint,
    headline_markdown,
    headline_table,
    need_for_width,
    official_effects,
    paper_text,
    plot_claim,
    plot_dependence,
    plot_headline,
    plot_scores_vs_need,
    primary_frames,
    primary_tests,
    runtime_table,
    setup_text,
    summary_text,
)
from hasa_results.experiments import (  # noqa: F401
    ALL_RUNS_METRICS,
    AS_PUBLISHED,
    CLAIM4_SCORES,
    NEED_SEEDS,
    PAPER_ACCURACY,
    PAPER_GAIN,
    POLICY_LABELS,
    POWER_SEEDS,
    PROTOCOLS,
    Q_CHOICES,
    SCORE_LABELS,
    SEEDS,
    SMOKE_SPECIFICATIONS,
    SPEC_METHODS,
    SPECIFICATIONS,
    WITH_EXTRAS,
    all_runs_frame,
    canonical,
    chosen_q,
    conclusion,
    experiments,
    extras_of,
    measured_need,
    method_label,
    precompute,
    run_experiment,
    run_methods,
    seeds_note,
    spec_label,
    spec_methods,
    specifications,
    text_claims,
)
from hasa_results.figures import (  # noqa: F401
    CI_LABEL,
    METHOD_COLOURS,
    PAPER_COLOUR,
    SIGN_COLOURS,
    STYLE,
    VERDICT_COLOURS,
    colour,
    finish,
    house_style,
    plot_allocations,
    plot_gap_by_round,
    plot_paired,
    plot_per_client_differences,
)
from hasa_results.frames import (  # noqa: F401
    allocation_table,
    clients_frame,
    curves_frame,
    describe_clients,
    identical_runs,
    method_of,
    records_frame,
    scores_frame,
    summaries_from_clients,
    test_targets,
)
from hasa_results.front import (  # noqa: F401
    REQUIREMENTS,
    carry_over_row,
    federation_seeds,
    lede,
    lede_text,
    running_time,
    running_time_text,
    verdicts_text,
)
from hasa_results.mechanism import (  # noqa: F401
    accuracy_sweep_frame,
    band_edges,
    band_movement,
    control_reference,
    dilution_association,
    dilution_index,
    effective_widths,
    extra_width_movement,
    kept_units,
    mechanism_sentence,
    mechanism_text,
    narrower_evaluation,
    plot_accuracy_sweep,
    plot_unit_movement,
    trained_frontier,
    trained_width_evaluation,
    unit_movement_frame,
    width_yardstick,
)
from hasa_results.outputs import (  # noqa: F401
    SD_SUFFIX,
    STAGE_ENV,
    cell,
    current,
    output_dirs,
    publish,
    save_figure,
    save_table,
    staged,
    table_markdown,
)
from hasa_results.plan import (  # noqa: F401
    ALPHA,
    BASELINES,
    FAMILY,
    PRIMARIES,
    PROTOCOL_ORIGIN,
    SECOND_BENCHMARK,
    SECOND_BENCHMARK_FAMILY,
    SECOND_BENCHMARK_RUNS,
    SENSITIVITY,
    SLOPE_SESOI,
    STATEMENTS,
    TEXT_SESOI,
    VERDICTS,
    Primary,
    claim_verdict,
    family_level,
    federation_suffix,
    plan_table,
    simultaneous,
    verdict,
)
from hasa_results.report import (  # noqa: F401
    ALL_RUNS,
    NOTEBOOKS,
    PARTS,
    PROVENANCE,
    README,
    REPORT,
    TEXTS,
    _saved_tables,
    anchors,
    bench_markdown,
    broken_report_links,
    check_report,
    engine_text,
    fill_blocks,
    is_current,
    provenance_text,
    report_text,
    style_problems,
    typed_numbers,
    update_readme,
    write_all_runs,
    write_provenance,
    write_report,
)
from hasa_results.scale import (  # noqa: F401
    ENGINE_PHASES,
    TARGET_LABELS,
    before_after_sentence,
    engine_phases,
    flower_scale_text,
    many_clients_text,
    plot_engines,
    plot_many_clients,
    scale_conclusion,
    targets_sentence,
)
from hasa_results.shakespeare import (  # noqa: F401
    BASELINES_FAMILY,
    CI_LEVEL,
    CI_WORDS,
    CROSS_CLAIMS,
    EXPERIMENTS,
    MATCHED,
    MATCHED_METRICS,
    NOT_COMPUTED,
    PUBLISHED,
    REFERENCE,
    cross_benchmark_markdown,
    cross_benchmark_sentence,
    cross_benchmark_table,
    cross_benchmark_text,
    federation_name,
    matched_baselines,
    medium_verdicts,
    model_difference,
    on,
    plot_cross_benchmark,
    reference_sentence,
    reference_table,
    runs_table,
    second_benchmark_tests,
    second_benchmark_verdicts,
    shakespeare_frames,
    shakespeare_records,
    uniform_runs,
    uniform_targets,
    with_final,
)
from hasa_results.spec_curve import (  # noqa: F401
    calibrated_round,
    dilution_across_sentence,
    dilution_across_specs,
    joint_sign_flip,
    plot_spec_curve,
    spec_curve_sentences,
    spec_curve_table,
    spec_curve_text,
    spec_dilution,
    spec_frame,
    spec_joint_table,
)
from hasa_results.stats import (  # noqa: F401
    compare_family,
    gap_by_round,
    holm,
    mean_variants,
    min_detectable_effect,
    p_value,
    paired_stats,
    per_client_differences,
    power_paired_t,
    score_validity,
    seeds_for_power,
    sign_flip_p,
    sign_vectors,
    summary_table,
)
from hasa_results.words import (  # noqa: F401
    amount,
    interval,
    num,
    pp,
    say,
)
