-- One word for one thing: a multicast request is a "send group" (a "batch" is only ever the
-- API's batch endpoints). Renames keep every row, constraint and index as they were.
ALTER TABLE send_batches RENAME TO send_groups;
ALTER TABLE send_groups RENAME CONSTRAINT send_batches_pkey TO send_groups_pkey;
ALTER INDEX send_batches_due RENAME TO send_groups_due;
ALTER INDEX send_batches_leased RENAME TO send_groups_leased;
ALTER TABLE deliveries RENAME COLUMN send_batch_id TO send_group_id;
ALTER TABLE deliveries RENAME CONSTRAINT deliveries_send_batch TO deliveries_send_group;
ALTER INDEX deliveries_send_batch RENAME TO deliveries_send_group;
