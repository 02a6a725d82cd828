-- Runs once, when the postgresql volume is first initialised (as POSTGRES_USER).
-- Temporal's databases (temporal, temporal_visibility) are created by temporalio/auto-setup;
-- this creates the application's database with pgvector. Tables come from `convergio db upgrade`.
CREATE DATABASE convergio;

\c convergio
CREATE EXTENSION IF NOT EXISTS vector;
