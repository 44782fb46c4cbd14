UPDATE patient SET age_unit = NULL;
