UPDATE patient SET age_unit = 'years' WHERE age_unit IS NULL;
