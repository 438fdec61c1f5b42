-- migrations: m0001_core m0070_trainers m0080_less m0090_unlearning m0100_run_leases m0110_run_prompts m0120_call_cost m0121_batch_jobs m0130_call_lookup m0140_call_ids_unindexed m0150_grade_lookup m0160_item_seq
CREATE TABLE "_migrations" (
   "name" TEXT PRIMARY KEY,
   "applied_at" TEXT
);
CREATE TABLE "runs" (
   "id" TEXT PRIMARY KEY,
   "pipeline" TEXT,
   "config" TEXT,
   "version" TEXT,
   "status" TEXT,
   "command" TEXT,
   "error" TEXT,
   "created_at" TEXT,
   "updated_at" TEXT,
   "finished_at" TEXT
, "prompts_dir" TEXT);
CREATE TABLE "prompt_versions" (
   "id" TEXT PRIMARY KEY,
   "name" TEXT,
   "text" TEXT,
   "source" TEXT,
   "created_at" TEXT
);
CREATE TABLE "catalogs" (
   "id" TEXT PRIMARY KEY,
   "name" TEXT,
   "kind" TEXT,
   "source" TEXT,
   "meta" TEXT,
   "created_at" TEXT
);
CREATE TABLE "catalog_entries" (
   "id" TEXT PRIMARY KEY,
   "catalog_id" TEXT REFERENCES "catalogs"("id"),
   "position" INTEGER,
   "name" TEXT,
   "category" TEXT,
   "definition" TEXT,
   "example" TEXT,
   "status" TEXT,
   "parent" TEXT,
   "extra" TEXT
);
CREATE TABLE "exemplars" (
   "id" TEXT PRIMARY KEY,
   "catalog_id" TEXT REFERENCES "catalogs"("id"),
   "skill" TEXT,
   "question" TEXT,
   "answer" TEXT,
   "extra" TEXT,
   "source_item_id" TEXT
);
CREATE TABLE "run_catalogs" (
   "run_id" TEXT,
   "catalog_id" TEXT,
   "role" TEXT,
   PRIMARY KEY ("run_id", "catalog_id", "role")
);
CREATE TABLE "items" (
   "id" TEXT PRIMARY KEY,
   "run_id" TEXT REFERENCES "runs"("id"),
   "kind" TEXT,
   "combo_index" INTEGER,
   "round" INTEGER,
   "status" TEXT,
   "k" INTEGER,
   "skills" TEXT,
   "topic" TEXT,
   "payload" TEXT,
   "prompt_versions" TEXT,
   "error" TEXT,
   "parent_id" TEXT,
   "created_at" TEXT,
   "updated_at" TEXT
);
CREATE TABLE "reviews" (
   "id" TEXT PRIMARY KEY,
   "item_id" TEXT,
   "run_id" TEXT,
   "reviewer" TEXT,
   "decision" TEXT,
   "reason" TEXT,
   "changes" TEXT,
   "created_at" TEXT
);
CREATE TABLE "events" (
   "id" INTEGER PRIMARY KEY,
   "run_id" TEXT,
   "item_id" TEXT,
   "stage" TEXT,
   "status" TEXT,
   "reason" TEXT,
   "created_at" TEXT
, item_seq INTEGER);
CREATE INDEX "idx_items_run_id_status"
    ON "items" ("run_id", "status");
CREATE INDEX "idx_reviews_item_id"
    ON "reviews" ("item_id");
CREATE INDEX "idx_catalog_entries_catalog_id_position"
    ON "catalog_entries" ("catalog_id", "position");
CREATE INDEX "idx_exemplars_catalog_id_skill"
    ON "exemplars" ("catalog_id", "skill");
CREATE TABLE "train_checkpoints" (
   "id" TEXT PRIMARY KEY,
   "run_id" TEXT,
   "method" TEXT,
   "path" TEXT,
   "base_model" TEXT,
   "step" INTEGER,
   "train_template" TEXT,
   "train_template_version" TEXT,
   "eval_template" TEXT,
   "eval_template_version" TEXT,
   "metrics" TEXT,
   "created_at" TEXT
);
CREATE TABLE "evaluations" (
   "id" TEXT PRIMARY KEY,
   "run_id" TEXT,
   "checkpoint_id" TEXT,
   "model" TEXT,
   "template" TEXT,
   "template_version" TEXT,
   "judge" TEXT,
   "n" INTEGER,
   "metrics" TEXT,
   "records" TEXT,
   "created_at" TEXT
);
CREATE TABLE "ches_scores" (
   "id" TEXT PRIMARY KEY,
   "pair_id" TEXT,
   "model" TEXT,
   "model_path" TEXT,
   "source" TEXT,
   "run_id" TEXT,
   "ches" REAL,
   "ches_norm" REAL,
   "neg_ned" REAL,
   "last_inner" REAL,
   "len_chosen" INTEGER,
   "len_rejected" INTEGER,
   "created_at" TEXT
);
CREATE INDEX "idx_train_checkpoints_run_id"
    ON "train_checkpoints" ("run_id");
CREATE INDEX "idx_evaluations_run_id"
    ON "evaluations" ("run_id");
CREATE INDEX "idx_ches_scores_pair_id"
    ON "ches_scores" ("pair_id");
CREATE TABLE "less_datastores" (
   "id" TEXT PRIMARY KEY,
   "pool" TEXT,
   "pool_hash" TEXT,
   "checkpoint" INTEGER,
   "kind" TEXT,
   "dim" INTEGER,
   "seed" INTEGER,
   "model" TEXT,
   "n_rows" INTEGER,
   "path" TEXT,
   "status" TEXT,
   "created_at" TEXT,
   "updated_at" TEXT
);
CREATE TABLE "selections" (
   "id" TEXT PRIMARY KEY,
   "method" TEXT,
   "run_id" TEXT,
   "source_run" TEXT,
   "pool" TEXT,
   "pool_hash" TEXT,
   "n_pool" INTEGER,
   "n_selected" INTEGER,
   "fraction" REAL,
   "provenance" TEXT,
   "created_at" TEXT
);
CREATE TABLE "selection_rows" (
   "selection_id" TEXT REFERENCES "selections"("id"),
   "rank" INTEGER,
   "row_index" INTEGER,
   "item_id" TEXT,
   "score" REAL,
   PRIMARY KEY ("selection_id", "rank")
);
CREATE INDEX "idx_less_datastores_pool_hash_checkpoint_kind_dim"
    ON "less_datastores" ("pool_hash", "checkpoint", "kind", "dim");
CREATE INDEX "idx_selection_rows_item_id"
    ON "selection_rows" ("item_id");
CREATE TABLE "topic_models" (
   "id" TEXT PRIMARY KEY,
   "parent_id" TEXT,
   "request_id" TEXT,
   "name" TEXT,
   "version" INTEGER,
   "kind" TEXT,
   "config" TEXT,
   "vocab" TEXT,
   "n_docs" INTEGER,
   "n_words" INTEGER,
   "n_topics" INTEGER,
   "anchors" TEXT,
   "metrics" TEXT,
   "source" TEXT,
   "state" BLOB,
   "released" BLOB,
   "created_at" TEXT
);
CREATE TABLE "topic_model_docs" (
   "model_id" TEXT,
   "item_id" TEXT,
   "counts" TEXT,
   "content_hash" TEXT,
   PRIMARY KEY ("model_id", "item_id")
);
CREATE TABLE "unlearning_requests" (
   "id" TEXT PRIMARY KEY,
   "model_id" TEXT,
   "new_model_id" TEXT,
   "selectors" TEXT,
   "mode" TEXT,
   "epsilon" REAL,
   "delta" REAL,
   "sensitivity" REAL,
   "sigma" REAL,
   "noiseless" INTEGER,
   "n_forget" INTEGER,
   "n_forget_in_model" INTEGER,
   "stats" TEXT,
   "status" TEXT,
   "created_at" TEXT
);
CREATE TABLE "forget_sets" (
   "request_id" TEXT,
   "item_id" TEXT,
   "matched_by" TEXT,
   "in_model" INTEGER,
   PRIMARY KEY ("request_id", "item_id")
);
CREATE INDEX "idx_topic_model_docs_item_id"
    ON "topic_model_docs" ("item_id");
CREATE INDEX "idx_topic_models_name_version"
    ON "topic_models" ("name", "version");
CREATE INDEX "idx_forget_sets_item_id"
    ON "forget_sets" ("item_id");
CREATE TABLE "run_leases" (
   "run_id" TEXT PRIMARY KEY,
   "token" TEXT,
   "pid" INTEGER,
   "host" TEXT,
   "proc_start" TEXT,
   "command" TEXT,
   "acquired_at" TEXT,
   "heartbeat_at" TEXT
);
CREATE TABLE "run_prompts" (
   "run_id" TEXT,
   "name" TEXT,
   "version" TEXT,
   "pinned_at" TEXT,
   PRIMARY KEY ("run_id", "name", "version")
);
CREATE TABLE "batch_jobs" (
   "id" TEXT PRIMARY KEY,
   "run_id" TEXT,
   "provider" TEXT,
   "model" TEXT,
   "base_url" TEXT,
   "status" TEXT,
   "input_file_id" TEXT,
   "output_file_id" TEXT,
   "error_file_id" TEXT,
   "requests" INTEGER,
   "error" TEXT,
   "created_at" TEXT,
   "updated_at" TEXT
);
CREATE TABLE "batch_requests" (
   "batch_id" TEXT,
   "call_key" TEXT,
   "run_id" TEXT,
   "delivered" INTEGER,
   PRIMARY KEY ("batch_id", "call_key")
);
CREATE INDEX "idx_batch_requests_call_key"
    ON "batch_requests" ("call_key");
CREATE TABLE [llm_calls] ([id] TEXT, [call_key] TEXT, [run_id] TEXT, [item_id] TEXT, [role] TEXT, [provider] TEXT, [model] TEXT, [prompt_version] TEXT, [request] TEXT, [response] TEXT, [input_tokens] INTEGER, [output_tokens] INTEGER, [latency_ms] REAL, [attempts] INTEGER, [error] TEXT, [created_at] TEXT, [cost_usd] REAL, item_seq INTEGER);
CREATE INDEX "idx_llm_calls_run_id"
    ON "llm_calls" ("run_id");
CREATE TABLE [grades] ([id] TEXT, [item_id] TEXT, [run_id] TEXT, [call_id] TEXT, [judge] TEXT, [sample_index] INTEGER, [raw] TEXT, [points] TEXT, [score] REAL, [parse_status] TEXT, [created_at] TEXT, item_seq INTEGER);
CREATE INDEX idx_llm_calls_item_seq_call_key ON llm_calls (item_seq, call_key);
CREATE TRIGGER [llm_calls_item_seq] AFTER INSERT ON [llm_calls] WHEN NEW.item_seq IS NULL AND NEW.item_id IS NOT NULL BEGIN UPDATE [llm_calls] SET item_seq = (SELECT rowid FROM items WHERE id = NEW.item_id) WHERE rowid = NEW.rowid; END;
CREATE UNIQUE INDEX idx_grades_item_seq_id ON grades (item_seq, id);
CREATE TRIGGER [grades_item_seq] AFTER INSERT ON [grades] WHEN NEW.item_seq IS NULL AND NEW.item_id IS NOT NULL BEGIN UPDATE [grades] SET item_seq = (SELECT rowid FROM items WHERE id = NEW.item_id) WHERE rowid = NEW.rowid; END;
CREATE INDEX idx_events_item_seq ON events (item_seq);
CREATE TRIGGER [events_item_seq] AFTER INSERT ON [events] WHEN NEW.item_seq IS NULL AND NEW.item_id IS NOT NULL BEGIN UPDATE [events] SET item_seq = (SELECT rowid FROM items WHERE id = NEW.item_id) WHERE rowid = NEW.rowid; END;
