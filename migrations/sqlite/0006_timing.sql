-- Stage timings at microsecond resolution (the millisecond columns stay for what reads them).
ALTER TABLE stage_runs ADD COLUMN started_us INTEGER;
ALTER TABLE stage_runs ADD COLUMN finished_us INTEGER;
